/* A small closed-loop UDP DNS load generator for the bench's saturation rows.
 *
 * Why not only dnsperf: dnsperf spends ~8 µs of CPU per query here, so on its one CPU it tops
 * out near the server it is meant to saturate. This keeps a fixed number of queries outstanding
 * per socket (closed loop), sends and receives in batches (sendmmsg/recvmmsg) on connected
 * sockets, pre-encodes every query once, and does nothing per packet beyond matching the reply.
 *
 * Only 127.0.0.1 is ever a destination. Bounded by a query count and a time limit (plus a
 * SIGALRM hard stop). Output is one "key value" pair per line for bench/loadgen.py to parse.
 *
 * A reply counts as completed only if it is at least a header, has QR set, carries the ID of a
 * query outstanding on that socket, and repeats that query's question section byte for byte;
 * anything else is counted as "bad" and ignored (its query stays outstanding and may time out).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SOCKETS 64
#define MAX_OUTSTANDING 1024 /* per socket */
#define MAX_QUERIES 4000000
#define MAX_QUERY_LEN 300 /* header + 255-byte name + type/class */
#define BATCH 64
#define RECV_BUF 4096

struct query {
	uint16_t len; /* whole query; the question is bytes 12..len */
	uint8_t wire[MAX_QUERY_LEN];
};

struct slot {
	double sent_at; /* 0: free */
	uint32_t query;
	uint16_t id;
};

struct sock {
	int fd;
	unsigned busy;
	uint16_t next_id;
	struct slot slots[MAX_OUTSTANDING];
	uint16_t free_list[MAX_OUTSTANDING];
	unsigned nfree;
	/* ID -> slot index + 1 (0: no query with this ID outstanding). */
	uint16_t by_id[65536];
};

static struct query *queries;
static uint32_t nqueries;
static uint32_t next_query;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *msg)
{
	fprintf(stderr, "loadgen: %s\n", msg);
	exit(2);
}

static int qtype_code(const char *text)
{
	static const struct {
		const char *name;
		int code;
	} types[] = {
		{"A", 1},     {"NS", 2},   {"CNAME", 5}, {"SOA", 6},  {"PTR", 12},   {"MX", 15},
		{"TXT", 16},  {"AAAA", 28}, {"SRV", 33},  {"NAPTR", 35}, {"HTTPS", 65}, {"ANY", 255},
	};
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if (strcasecmp(text, types[i].name) == 0)
			return types[i].code;
	if (strncasecmp(text, "TYPE", 4) == 0) {
		char *end;
		long v = strtol(text + 4, &end, 10);
		if (*end == '\0' && v > 0 && v < 65536)
			return (int)v;
	}
	return -1;
}

/* Encode "name TYPE" into q (ID left 0). Returns 0 or -1 on a malformed line. */
static int encode(const char *name, const char *type, struct query *q)
{
	int code = qtype_code(type);
	if (code < 0)
		return -1;
	uint8_t *w = q->wire;
	memset(w, 0, 12);
	w[2] = 0x01; /* RD, as dnsperf sends */
	w[5] = 1;    /* QDCOUNT */
	size_t pos = 12, namelen = 0;
	const char *p = name;
	if (strcmp(p, ".") != 0) {
		while (*p) {
			const char *dot = strchr(p, '.');
			size_t n = dot ? (size_t)(dot - p) : strlen(p);
			if (n == 0 || n > 63)
				return -1;
			namelen += n + 1;
			if (namelen + 1 > 255 || pos + 1 + n > MAX_QUERY_LEN - 5)
				return -1;
			w[pos++] = (uint8_t)n;
			memcpy(w + pos, p, n);
			pos += n;
			p += n;
			if (*p == '.')
				p++;
		}
	}
	w[pos++] = 0;
	w[pos++] = (uint8_t)(code >> 8);
	w[pos++] = (uint8_t)code;
	w[pos++] = 0;
	w[pos++] = 1; /* IN */
	q->len = (uint16_t)pos;
	return 0;
}

static void load_queries(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		die("cannot open the query file");
	size_t cap = 1024;
	queries = malloc(cap * sizeof *queries);
	if (!queries)
		die("out of memory");
	char line[1024];
	unsigned long lineno = 0;
	while (fgets(line, sizeof line, f)) {
		lineno++;
		char name[512], type[32];
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (sscanf(line, "%511s %31s", name, type) != 2) {
			fprintf(stderr, "loadgen: %s:%lu: expected \"name TYPE\"\n", path, lineno);
			exit(2);
		}
		if (nqueries == MAX_QUERIES)
			die("too many queries in the file");
		if (nqueries == cap) {
			cap *= 2;
			struct query *grown = realloc(queries, cap * sizeof *queries);
			if (!grown)
				die("out of memory");
			queries = grown;
		}
		if (encode(name, type, &queries[nqueries]) != 0) {
			fprintf(stderr, "loadgen: %s:%lu: cannot encode %s %s\n", path, lineno, name, type);
			exit(2);
		}
		nqueries++;
	}
	fclose(f);
	if (nqueries == 0)
		die("the query file has no queries");
}

static unsigned long long sent, completed, completed_in_window, lost, bad, send_errors;
static unsigned long long rcodes[16];
static double lat_sum;

static void release(struct sock *s, unsigned idx)
{
	s->by_id[s->slots[idx].id] = 0;
	s->slots[idx].sent_at = 0;
	s->free_list[s->nfree++] = (uint16_t)idx;
	s->busy--;
}

/* UDP GSO (UDP_SEGMENT): consecutive queries of one length go out as one message that the
 * kernel splits into separate datagrams on delivery, so the route, loopback device and backlog
 * are paid once per run instead of once per query. The server still receives one ordinary
 * datagram per query (it has not asked for UDP_GRO). Switched off for good if the kernel
 * refuses it. */
static int use_gso = 1;
#define GSO_MAX_SEGMENTS 64

/* Fill every free slot of s, up to the query budget; one sendmmsg per batch. */
static void send_batch(struct sock *s, unsigned long long budget, double t)
{
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	unsigned idx[BATCH];
	unsigned first[BATCH], count[BATCH];
	union {
		char buf[CMSG_SPACE(sizeof(uint16_t))];
		struct cmsghdr align;
	} ctrl[BATCH];
	while (s->nfree > 0 && sent < budget) {
		unsigned n = 0, m = 0; /* queries and messages in this batch */
		while (n < BATCH && s->nfree > 0 && sent + n < budget) {
			unsigned i = s->free_list[--s->nfree];
			uint16_t id;
			do /* an ID not outstanding on this socket (at most MAX_OUTSTANDING are) */
				id = s->next_id++;
			while (s->by_id[id] != 0);
			struct slot *sl = &s->slots[i];
			sl->id = id;
			sl->query = next_query;
			sl->sent_at = t;
			next_query = next_query + 1 == nqueries ? 0 : next_query + 1;
			s->by_id[id] = (uint16_t)(i + 1);
			s->busy++;
			struct query *q = &queries[sl->query];
			/* The ID is patched into the one pre-encoded copy: sendmmsg has copied the
			 * bytes by the time it returns, and one batch holds consecutive queries,
			 * distinct unless the list is shorter than a batch (handled below). */
			q->wire[0] = (uint8_t)(id >> 8);
			q->wire[1] = (uint8_t)id;
			iov[n].iov_base = q->wire;
			iov[n].iov_len = q->len;
			idx[n] = i;
			if (use_gso && m > 0 && iov[first[m - 1]].iov_len == q->len && count[m - 1] < GSO_MAX_SEGMENTS) {
				count[m - 1]++;
			} else {
				first[m] = n;
				count[m] = 1;
				m++;
			}
			n++;
			if (nqueries < BATCH) /* a tiny name list repeats within one batch: flush now */
				break;
		}
		for (unsigned k = 0; k < m; k++) {
			struct msghdr *h = &msgs[k].msg_hdr;
			memset(h, 0, sizeof *h);
			h->msg_iov = &iov[first[k]];
			h->msg_iovlen = count[k];
			if (count[k] > 1) {
				h->msg_control = ctrl[k].buf;
				h->msg_controllen = sizeof ctrl[k].buf;
				struct cmsghdr *c = CMSG_FIRSTHDR(h);
				c->cmsg_level = SOL_UDP;
				c->cmsg_type = UDP_SEGMENT;
				c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
				uint16_t seg = (uint16_t)iov[first[k]].iov_len;
				memcpy(CMSG_DATA(c), &seg, sizeof seg);
			}
		}
		int done = sendmmsg(s->fd, msgs, m, MSG_DONTWAIT);
		int err = done < 0 ? errno : 0;
		unsigned ok_msgs = done < 0 ? 0 : (unsigned)done;
		unsigned ok = ok_msgs < m ? first[ok_msgs] : n; /* queries in the messages that went */
		sent += ok;
		int refused = ok_msgs < m && count[ok_msgs] > 1 && (err == EINVAL || err == EIO || err == ENOPROTOOPT);
		if (refused) /* the kernel or this socket cannot segment: plain datagrams from now on */
			use_gso = 0;
		for (unsigned k = ok; k < n; k++) { /* not sent: give the slots back */
			release(s, idx[k]);
			if (!refused)
				send_errors++;
		}
		if (ok < n && !refused)
			return; /* socket buffer full or an error: try again after the next poll */
	}
}

static void receive(struct sock *s, double t, double window_end)
{
	static uint8_t bufs[BATCH][RECV_BUF];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	for (;;) {
		for (unsigned k = 0; k < BATCH; k++) {
			iov[k].iov_base = bufs[k];
			iov[k].iov_len = RECV_BUF;
			memset(&msgs[k].msg_hdr, 0, sizeof msgs[k].msg_hdr);
			msgs[k].msg_hdr.msg_iov = &iov[k];
			msgs[k].msg_hdr.msg_iovlen = 1;
		}
		int n = recvmmsg(s->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
		if (n <= 0)
			return;
		for (int k = 0; k < n; k++) {
			const uint8_t *b = bufs[k];
			size_t len = msgs[k].msg_len;
			if (len < 12 || (msgs[k].msg_hdr.msg_flags & MSG_TRUNC) || !(b[2] & 0x80)) {
				bad++;
				continue;
			}
			uint16_t id = (uint16_t)(b[0] << 8 | b[1]);
			unsigned ref = s->by_id[id];
			if (ref == 0) {
				bad++;
				continue;
			}
			struct slot *sl = &s->slots[ref - 1];
			const struct query *q = &queries[sl->query];
			size_t qlen = q->len;
			/* The question must come back as asked: QDCOUNT 1 and the same bytes. */
			if (len < qlen || b[4] != 0 || b[5] != 1 || memcmp(b + 12, q->wire + 12, qlen - 12) != 0) {
				bad++;
				continue;
			}
			rcodes[b[3] & 0x0f]++;
			completed++;
			if (t <= window_end)
				completed_in_window++;
			lat_sum += t - sl->sent_at;
			release(s, ref - 1);
		}
		if (n < BATCH)
			return;
	}
}

static void expire(struct sock *s, double t, double timeout)
{
	for (unsigned i = 0; i < MAX_OUTSTANDING && s->busy > 0; i++) {
		double at = s->slots[i].sent_at;
		if (at != 0 && t - at > timeout) {
			lost++;
			release(s, i);
		}
	}
}

static void usage(void)
{
	fprintf(stderr,
		"usage: loadgen -p PORT -d QUERYFILE [-l SECONDS] [-n MAXQUERIES] [-c SOCKETS]\n"
		"               [-q OUTSTANDING_PER_SOCKET] [-t TIMEOUT_S] [-G]\n"
		"-G: one datagram per sendmmsg entry (no UDP GSO).\n"
		"Sends to 127.0.0.1:PORT only.\n");
	exit(2);
}

int main(int argc, char **argv)
{
	long port = 0, nsock = 4, outstanding = 100;
	double duration = 5.0, timeout = 2.0;
	unsigned long long budget = ~0ULL;
	const char *path = NULL;
	int opt;
	while ((opt = getopt(argc, argv, "p:d:l:n:c:q:t:G")) != -1) {
		switch (opt) {
		case 'p': port = strtol(optarg, NULL, 10); break;
		case 'd': path = optarg; break;
		case 'l': duration = strtod(optarg, NULL); break;
		case 'n': budget = strtoull(optarg, NULL, 10); break;
		case 'c': nsock = strtol(optarg, NULL, 10); break;
		case 'q': outstanding = strtol(optarg, NULL, 10); break;
		case 't': timeout = strtod(optarg, NULL); break;
		case 'G': use_gso = 0; break;
		default: usage();
		}
	}
	if (!path || port <= 0 || port > 65535 || nsock < 1 || nsock > MAX_SOCKETS || outstanding < 1 ||
	    outstanding > MAX_OUTSTANDING || !(duration > 0 && duration <= 3600) ||
	    !(timeout > 0 && timeout <= 60) || budget == 0)
		usage();
	load_queries(path);
	/* Hard stop: the run, then at most one timeout of draining, then a margin. */
	signal(SIGALRM, SIG_DFL);
	alarm((unsigned)(duration + timeout) + 5);

	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct sock *socks = calloc((size_t)nsock, sizeof *socks);
	struct pollfd *pfds = calloc((size_t)nsock, sizeof *pfds);
	if (!socks || !pfds)
		die("out of memory");
	for (long i = 0; i < nsock; i++) {
		struct sock *s = &socks[i];
		s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
		if (s->fd < 0)
			die("socket() failed");
		int rcv = 1 << 20;
		setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
		if (connect(s->fd, (struct sockaddr *)&dst, sizeof dst) != 0)
			die("connect() failed");
		for (long k = 0; k < outstanding; k++)
			s->free_list[s->nfree++] = (uint16_t)(outstanding - 1 - k);
		s->next_id = (uint16_t)(0x1000 * i + 1);
		pfds[i].fd = s->fd;
		pfds[i].events = POLLIN;
	}

	double start = now(), window_end = start + duration, last_expire = start;
	double t = start;
	for (;;) {
		t = now();
		if (t >= window_end || sent >= budget)
			break;
		for (long i = 0; i < nsock; i++)
			send_batch(&socks[i], budget, t);
		int ready = poll(pfds, (nfds_t)nsock, 10);
		if (ready < 0 && errno != EINTR)
			die("poll() failed");
		t = now();
		for (long i = 0; i < nsock; i++)
			if (pfds[i].revents & (POLLIN | POLLERR)) /* reading also clears an ICMP error */
				receive(&socks[i], t, window_end);
		if (t - last_expire > 0.05) {
			for (long i = 0; i < nsock; i++)
				expire(&socks[i], t, timeout);
			last_expire = t;
		}
	}
	/* A budget that ran out early ends the window there: replies while draining do not count. */
	if (t < window_end)
		window_end = t;
	double window = window_end - start;

	/* Drain: what is still outstanding gets one timeout to come back, then counts as lost. */
	double drain_end = t + timeout;
	for (;;) {
		unsigned long long busy = 0;
		for (long i = 0; i < nsock; i++)
			busy += socks[i].busy;
		t = now();
		if (busy == 0 || t >= drain_end)
			break;
		int ready = poll(pfds, (nfds_t)nsock, 10);
		if (ready < 0 && errno != EINTR)
			die("poll() failed");
		t = now();
		for (long i = 0; i < nsock; i++)
			if (pfds[i].revents & (POLLIN | POLLERR)) /* reading also clears an ICMP error */
				receive(&socks[i], t, window_end);
		for (long i = 0; i < nsock; i++)
			expire(&socks[i], t, timeout);
	}
	for (long i = 0; i < nsock; i++) {
		while (socks[i].busy > 0)
			expire(&socks[i], t, -1.0);
		close(socks[i].fd);
	}
	double total = now() - start;

	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
	double sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	static const char *names[16] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
					"YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE", "RCODE11",
					"RCODE12", "RCODE13", "RCODE14", "RCODE15"};
	printf("sent %llu\n", sent);
	printf("completed %llu\n", completed);
	printf("completed_in_window %llu\n", completed_in_window);
	printf("lost %llu\n", lost);
	printf("bad %llu\n", bad);
	printf("send_errors %llu\n", send_errors);
	printf("gso %d\n", use_gso);
	printf("window_s %.6f\n", window);
	printf("runtime_s %.6f\n", total);
	printf("qps %.1f\n", window > 0 ? (double)completed_in_window / window : 0.0);
	printf("avg_latency_s %.9f\n", completed ? lat_sum / (double)completed : 0.0);
	printf("cpu_user_s %.6f\n", user);
	printf("cpu_sys_s %.6f\n", sys);
	for (int i = 0; i < 16; i++)
		if (rcodes[i])
			printf("rcode %s %llu\n", names[i], rcodes[i]);
	return 0;
}
