"""Every manifest, Corefile and `nodelocaldns render` command in docs/ is checked by machine.

* ```yaml blocks: Kubernetes objects validate strictly (kubernetes-validate, oldest and newest
  schema), CiliumLocalRedirectPolicy against its CRD's required fields; the few node config files
  (KubeletConfiguration) against the keys the docs may use.
* ```corefile blocks: the agent's renderer fills any placeholders, then the Corefile parser and
  every plugin's setup must accept the result.
* ```sh blocks: `nodelocaldns render …` parses with render's own argument parser and, unless it
  needs a cluster (--discover), renders; `kubectl … -k DIR` names a directory that exists.
"""

from __future__ import annotations

import io
import ipaddress
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from nodelocaldns.corefile import parse_corefile
from nodelocaldns.node import flags as node_flags
from nodelocaldns.node import render as node_render
from nodelocaldns.server.config import plan
from nodelocaldns.tools import checks, render

REPO = Path(__file__).resolve().parents[1]
DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "deploy" / "README.md"]
K8S_VERSIONS = ("1.25.0", "1.37.0")
ENV = {"KUBE_DNS_SERVICE_HOST": "10.96.0.10", "KUBE_DNS_UPSTREAM_SERVICE_HOST": "10.96.0.11"}
# Node configuration files (not API objects) the docs show, and the keys they may use.
CONFIG_FILES = {
    ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"): {"clusterDNS", "clusterDomain", "resolvConf"},
}
_FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    text: str

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(lang: str) -> list[Block]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for m in _FENCE.finditer(text):
            if m.group(2) == lang:
                indent = len(m.group(1))
                body = "".join(line[indent:] + "\n" for line in m.group(3).splitlines())
                found.append(Block(path, text.count("\n", 0, m.start()) + 1, lang, body))
    return found


def test_docs_exist_and_have_examples() -> None:
    names = {p.name for p in DOCS}
    assert {"install.md", "upgrade.md", "troubleshooting.md", "configuration.md"} <= names
    assert len(blocks("yaml")) >= 5 and len(blocks("corefile")) >= 3 and len(blocks("sh")) >= 5


def test_fence_extraction_sees_indented_blocks() -> None:
    """Blocks nested in list items must not slip past the checks."""
    text = "1. step\n\n   ```yaml\n   kind: X\n   ```\n"
    (m,) = _FENCE.finditer(text)
    assert m.group(2) == "yaml" and m.group(3).strip() == "kind: X"


def _check_config_file(doc: dict[str, Any], where: str) -> None:
    allowed = CONFIG_FILES[(doc["apiVersion"], doc["kind"])]
    extra = set(doc) - {"apiVersion", "kind"} - allowed
    assert not extra, f"{where}: keys {sorted(extra)} are not checked here; extend CONFIG_FILES"
    for ip in doc.get("clusterDNS", []):
        ipaddress.ip_address(ip)


@pytest.mark.parametrize("block", blocks("yaml"), ids=str)
def test_yaml_examples_are_valid(block: Block) -> None:
    docs = [d for d in yaml.safe_load_all(block.text) if d is not None]
    assert docs, f"{block}: empty"
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CONFIG_FILES:
            _check_config_file(doc, str(block))
        elif doc.get("kind") == "CiliumLocalRedirectPolicy":
            # Only the CRD's own requirements: the backend pods live in another example.
            problems = [p for p in checks.check_local_redirect_policy(doc, []) if "selects no pod" not in p]
            assert problems == [], f"{block}: {problems}"
        else:
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("block", blocks("corefile"), ids=str)
def test_corefile_examples_parse_and_set_up(block: Block) -> None:
    text = block.text
    if "__PILLAR__" in text:
        params = node_flags.parse_args(
            ["-localip", "169.254.20.10,10.96.0.10", "-conf", "/etc/Corefile"],
            env=ENV,
            path_exists=lambda _: False,
        )
        text = node_render.render_corefile(text, params, env=ENV, file_exists=lambda _: True).text
        assert "__PILLAR__" not in text, f"{block}: unknown placeholder"
    p = plan(parse_corefile(text, str(block.path)))
    assert p.blocks, f"{block}: no server blocks"


def _commands(block: Block) -> list[list[str]]:
    """Each command line of a sh block as argv, continuation lines joined, pipes split."""
    joined = block.text.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        argv: list[str] = []
        for token in list(lexer) + ["|"]:
            if token in ("|", "||", "&&", ";", ">", ">>", "<"):
                if argv:
                    out.append(argv)
                argv = []
                if token in (">", ">>", "<"):
                    break
            else:
                argv.append(token)
    return out


def sh_commands(program: str) -> list[tuple[str, list[str]]]:
    return [
        (f"{b}", argv)
        for b in blocks("sh")
        for argv in _commands(b)
        if argv[: len(program.split())] == program.split()
    ]


@pytest.mark.parametrize(
    ("where", "argv"), sh_commands("nodelocaldns render"), ids=lambda v: v if isinstance(v, str) else ""
)
def test_render_commands_in_docs_work(where: str, argv: list[str]) -> None:
    args = argv[2:]
    parsed = render.build_parser().parse_args(args)
    if parsed.discover:
        return  # needs a cluster; tests/test_render_discover.py covers the path with a stand-in kubectl
    out, err = io.StringIO(), io.StringIO()
    assert render.main(args, out=out, err=err) == 0, f"{where}: {err.getvalue()}"
    assert list(yaml.safe_load_all(out.getvalue()))


@pytest.mark.parametrize(
    ("where", "argv"), sh_commands("kubectl"), ids=lambda v: v if isinstance(v, str) else ""
)
def test_kubectl_commands_name_real_directories(where: str, argv: list[str]) -> None:
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "-k":
            assert (REPO / value / "kustomization.yaml").is_file(), f"{where}: {value} is not a kustomization"


def test_relative_links_resolve() -> None:
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", path.read_text()):
            assert (path.parent / target).is_file(), f"{path.name}: broken link {target}"


def test_the_extractors_can_fail() -> None:
    """The sh splitter finds commands after pipes and stops at redirections."""
    b = Block(
        Path("x.md"), 1, "sh", "nodelocaldns render --mode ipvs | kubectl apply -f - # note\nfoo > out.yaml\n"
    )
    assert _commands(b) == [
        ["nodelocaldns", "render", "--mode", "ipvs"],
        ["kubectl", "apply", "-f", "-"],
        ["foo"],
    ]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {"bogus": 1}}, "1.37.0", strict=True
        )


README = REPO / "README.md"


def test_docs_stay_inside_the_repository() -> None:
    """Docs state facts themselves: no machine paths, no notes outside the repository."""
    for path in [*DOCS, README]:
        text = path.read_text()
        for needle in ("/work/", "seed article", "§"):
            assert needle not in text, f"{path.name}: cites {needle!r}"


def test_render_docs_do_not_claim_the_same_text_as_kustomize() -> None:
    # render and kustomize give the same objects (tests/test_deploy_kustomize.py), not the same bytes.
    for path in DOCS:
        assert not re.search(r"exactly\s+what\s+`kubectl kustomize", path.read_text()), path.name


def test_readme_image_steps_match_the_build() -> None:
    text = README.read_text()
    build = (REPO / "image" / "build.sh").read_text()
    out = re.search(r"^OUT=\$\{OUT:-\$REPO/([^}]+)\}$", build, re.M)
    assert out, "image/build.sh sets OUT"
    archive = out.group(1)
    assert re.search(r"^image:", (REPO / "Makefile").read_text(), re.M) and "make image" in text
    assert "IMAGE_TAG" in text and "${IMAGE_TAG:-}" in build
    named = re.findall(r"oci-archive:(\S+)", text) + re.findall(r"load -i (\S+)", text)
    assert named and set(named) == {archive}, named
    # The README's kustomize snippet names the image the manifests use, and its render command works.
    (snippet,) = [m.group(3) for m in _FENCE.finditer(text) if m.group(2) == "yaml"]
    (entry,) = yaml.safe_load(snippet)["images"]
    assert f"{entry['name']}:" in render.build_parser().get_default("image")
    for argv in (shlex.split(line) for line in re.findall(r"`(nodelocaldns render --image [^`]+)`", text)):
        assert render.main(argv[2:], out=io.StringIO(), err=io.StringIO()) == 0, argv
