"""The NodeLocal DNSCache addon's Corefile template, shared by every test that needs it.

The `node-local-dns` ConfigMap's Corefile from kubernetes/kubernetes
cluster/addons/dns/nodelocaldns/nodelocaldns.yaml (commit 028f956d), before the admin's sed.
"""

ADDON_COREFILE = """\
__PILLAR__DNS__DOMAIN__:53 {
    errors
    cache {
            success 9984 30
            denial 9984 5
    }
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    health __PILLAR__LOCAL__DNS__:8080
    }
in-addr.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    }
ip6.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    }
.:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__UPSTREAM__SERVERS__
    prometheus :9253
    }
"""

# The addon template plus `ready`, with the upstream port as `{up}` (str.format) for agents whose kube-dns
# stand-in listens on a test port.
AGENT_TEMPLATE = """\
__PILLAR__DNS__DOMAIN__:53 {{
    errors
    cache {{
            success 9984 30
            denial 9984 5
    }}
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__:{up} {{
            force_tcp
    }}
    prometheus :9253
    health __PILLAR__LOCAL__DNS__:8080
    ready __PILLAR__LOCAL__DNS__:8181
    }}
.:53 {{
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . 127.0.0.1:{up}
    prometheus :9253
    }}
"""
