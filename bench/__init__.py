"""`make bench`: dnsperf against nodelocaldns, unbound and dnsmasq (see bench/README.md)."""
