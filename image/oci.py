"""Write a one-layer OCI image archive from a rootfs tar, deterministically (stdlib only).

    python3 image/oci.py --layer layer.tar --out image.oci.tar --tag 0.1.0 --version 0.1.0 --epoch N

The archive is an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/...``) packed
as a tar, the format ``skopeo copy oci-archive:``, ``podman load`` and ``ctr images import``
read. Every byte depends only on the inputs: gzip without name or time, JSON with sorted keys,
tar entries in a fixed order with the epoch as mtime and root as owner.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
from typing import Any

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

VENV_BIN = "/opt/nodelocaldns/bin"
ENTRYPOINT = [f"{VENV_BIN}/node-cache"]
PATH = f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def descriptor(media_type: str, data_digest: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": data_digest, "size": size, **extra}


def compress_layer(src: str, dst: str) -> tuple[str, str, int]:
    """gzip ``src`` into ``dst``; return (diff_id, blob digest, blob size)."""
    raw, packed = hashlib.sha256(), hashlib.sha256()

    class Tee(io.RawIOBase):
        def __init__(self, out: io.BufferedWriter) -> None:
            self.out = out

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            packed.update(b)
            return self.out.write(b)

    with open(src, "rb") as fin, open(dst, "wb") as fout:
        tee = Tee(fout)
        with gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=tee, mtime=0) as gz:
            while chunk := fin.read(1 << 20):
                raw.update(chunk)
                gz.write(chunk)
    return "sha256:" + raw.hexdigest(), "sha256:" + packed.hexdigest(), os.path.getsize(dst)


def image_config(diff_id: str, version: str, epoch: int, arch: str) -> dict[str, Any]:
    created = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {
            "Entrypoint": ENTRYPOINT,
            "Env": [f"PATH={PATH}", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"],
            "Labels": {
                "org.opencontainers.image.title": "nodelocaldns",
                "org.opencontainers.image.description": "Kubernetes NodeLocal DNSCache in Python",
                "org.opencontainers.image.version": version,
                "org.opencontainers.image.licenses": "Apache-2.0",
                "org.opencontainers.image.base.name": "debian:bookworm (mmdebstrap, essential)",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "image/build.sh (mmdebstrap + pip wheels)"}],
    }


def _add(tar: tarfile.TarFile, name: str, epoch: int, data: bytes | None = None, path: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
    if data is None and not path:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        return
    info.mode = 0o644
    if path:
        info.size = os.path.getsize(path)
        with open(path, "rb") as f:
            tar.addfile(info, f)
    else:
        assert data is not None
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def build(layer_tar: str, out: str, tag: str, version: str, epoch: int, arch: str) -> str:
    """Write the archive; return the manifest digest (the image's identity)."""
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(out))) as tmp:
        layer_gz = os.path.join(tmp, "layer.tar.gz")
        diff_id, layer_digest, layer_size = compress_layer(layer_tar, layer_gz)
        config = canonical_json(image_config(diff_id, version, epoch, arch))
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": descriptor(MEDIA_CONFIG, config_digest, len(config)),
                "layers": [descriptor(MEDIA_LAYER, layer_digest, layer_size)],
            }
        )
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        index = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_INDEX,
                "manifests": [
                    descriptor(
                        MEDIA_MANIFEST,
                        manifest_digest,
                        len(manifest),
                        annotations={"org.opencontainers.image.ref.name": tag},
                        platform={"architecture": arch, "os": "linux"},
                    )
                ],
            }
        )
        partial = os.path.join(tmp, "image.oci.tar")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, "oci-layout", epoch, canonical_json({"imageLayoutVersion": "1.0.0"}))
            _add(tar, "index.json", epoch, index)
            _add(tar, "blobs", epoch)
            _add(tar, "blobs/sha256", epoch)
            blobs = [
                (config_digest, config, ""),
                (manifest_digest, manifest, ""),
                (layer_digest, None, layer_gz),
            ]
            for digest, data, path in sorted(blobs, key=lambda b: b[0]):
                _add(tar, "blobs/sha256/" + digest.removeprefix("sha256:"), epoch, data, path)
        shutil.move(partial, out)
    return manifest_digest


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layer", required=True, help="uncompressed rootfs tar")
    p.add_argument("--out", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--epoch", type=int, required=True, help="SOURCE_DATE_EPOCH")
    p.add_argument("--arch", default=_ARCH.get(platform.machine(), platform.machine()))
    args = p.parse_args(argv)
    digest = build(args.layer, args.out, args.tag, args.version, args.epoch, args.arch)
    print(f"==> manifest {digest} ({args.tag}, {args.arch})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
