/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Structs shared by the BPF programs (bpf/) and user space (native/, and the
 * TypeScript codecs in src/bpf/codecs.ts, which mirror this file).
 *
 * Addresses are always 16 bytes: IPv4 is stored IPv4-mapped (::ffff:a.b.c.d),
 * so one map serves both families and connect4/connect6 agree on keys.
 * Ports are in network byte order, as the kernel hands them to the hooks.
 */
#ifndef __ECNET_H
#define __ECNET_H

#include <linux/types.h>

#ifdef __cplusplus
#define ECNET_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define ECNET_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

/* Pinned map names: the loader, the CLI and bpftool users rely on them. */
#define ECNET_MAP_SERVICES "ecnet_services"
#define ECNET_MAP_SOCK_ORIGDST "ecnet_sock_dst"
#define ECNET_MAP_CONN_ORIGDST "ecnet_conn_dst"
#define ECNET_MAP_STATS "ecnet_stats"

/* Default capacities; the loader may override them before load. */
#define ECNET_SERVICES_MAX 65536
/* One entry per live redirected client socket; LRU, so a lost release
 * (e.g. programs replaced between connect and close) cannot fill it. Beyond
 * this many live redirected sockets the oldest lose their entry: their
 * getpeername shows the proxy, and if not yet established the proxy cannot route them. */
#define ECNET_SOCK_ORIGDST_MAX 65536
/* One entry per redirected connection not yet accepted by the proxy. */
#define ECNET_CONN_ORIGDST_MAX 65536

/* Key of ecnet_services: an imported service's ClusterIP:port/proto. */
struct ecnet_svc_key {
	__u8 addr[16];
	__be16 port;
	__u8 proto; /* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
	__u8 pad;
};
ECNET_STATIC_ASSERT(sizeof(struct ecnet_svc_key) == 20, "ecnet_svc_key size");

/* Value of ecnet_services. */
struct ecnet_svc_value {
	__u32 id;    /* service id chosen by the agent, carried to the proxy */
	__u32 flags; /* ECNET_SVC_F_* */
};
ECNET_STATIC_ASSERT(sizeof(struct ecnet_svc_value) == 8, "ecnet_svc_value size");

/* The service exists but must not be redirected (kept for visibility). */
#define ECNET_SVC_F_DISABLED (1U << 0)

/* The original destination of a redirected socket. Value of ecnet_sock_dst
 * (key: socket cookie, __u64); the first member of ecnet_conn_dst's value. */
struct ecnet_origdst {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 flags; /* ECNET_ORIGDST_F_* */
	__u32 svc_id;
};
ECNET_STATIC_ASSERT(sizeof(struct ecnet_origdst) == 24, "ecnet_origdst size");

/* The client connected through an AF_INET6 socket (connect6). */
#define ECNET_ORIGDST_F_V6SOCK (1U << 0)

/* Key of ecnet_conn_dst: the redirected connection as the proxy sees it
 * when it accepts: client (remote) address/port and proxy (local) address/port. */
struct ecnet_conn_key {
	__u8 client_addr[16];
	__u8 proxy_addr[16];
	__be16 client_port;
	__be16 proxy_port;
};
ECNET_STATIC_ASSERT(sizeof(struct ecnet_conn_key) == 36, "ecnet_conn_key size");

/* Value of ecnet_conn_dst. `dst` stays first, so a reader of the first 24
 * bytes sees a struct ecnet_origdst. recorded_ns lets user space ignore and
 * sweep entries no proxy took (client reset before accept, proxy down). */
struct ecnet_conn_dst {
	struct ecnet_origdst dst;
	__u64 recorded_ns; /* bpf_ktime_get_ns() at sockops: CLOCK_MONOTONIC */
};
ECNET_STATIC_ASSERT(sizeof(struct ecnet_conn_dst) == 32, "ecnet_conn_dst size");
ECNET_STATIC_ASSERT(__builtin_offsetof(struct ecnet_conn_dst, recorded_ns) == 24, "ecnet_conn_dst layout");

/* Load-time settings of sock_connect.bpf.c (its .rodata). */
struct ecnet_config {
	__u8 proxy_addr6[16]; /* all zero: IPv6 services are not redirected */
	__be32 proxy_addr4;
	__be16 proxy_port;
	__u16 pad;
	__u32 proxy_mark; /* sockets with (mark & proxy_mark) == proxy_mark are never redirected */
};
ECNET_STATIC_ASSERT(sizeof(struct ecnet_config) == 28, "ecnet_config size");

/* Indices of ecnet_stats (per-CPU __u64 counters). */
enum ecnet_stat {
	ECNET_STAT_REDIRECTED = 0,  /* connect rewritten to the proxy */
	ECNET_STAT_SKIPPED_MARK,    /* service matched, socket is the proxy's own */
	ECNET_STAT_SKIPPED_NO_V6,   /* IPv6 service matched, no IPv6 proxy address */
	ECNET_STAT_SOCK_DST_FAILED, /* could not remember the original destination (left alone) */
	ECNET_STAT_CONN_RECORDED,   /* established; 4-tuple recorded for the proxy */
	ECNET_STAT_CONN_DST_FAILED, /* could not record the 4-tuple (the proxy will refuse it) */
	ECNET_STAT_PEER_RESTORED,   /* getpeername answered with the original destination */
	ECNET_STAT_MAX,
};

#endif /* __ECNET_H */
