/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maps every ecnet program shares. Each .bpf.c is its own object; pinning by
 * name under one directory makes the objects (and a restarted agent, and the CLI)
 * open the same kernel maps.
 */
#ifndef __ECNET_MAPS_H
#define __ECNET_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "ecnet.h"

/* Imported services to redirect; written by the agent only. Not LRU: a service
 * must never be evicted behind the agent's back (a full map is an error there). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ECNET_SERVICES_MAX);
	__type(key, struct ecnet_svc_key);
	__type(value, struct ecnet_svc_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ecnet_services SEC(".maps");

/* socket cookie -> original destination, for getpeername and sockops.
 * Deleted by sock_release; LRU bounds it if a release is ever missed. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ECNET_SOCK_ORIGDST_MAX);
	__type(key, __u64);
	__type(value, struct ecnet_origdst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ecnet_sock_dst SEC(".maps");

/* Redirected connection (client, proxy) -> original destination and when it
 * was recorded. The proxy takes (lookup-and-delete) its entry when it accepts
 * the connection; it is not deleted when the client closes, because a short
 * client may close before the proxy has accepted. What no proxy takes is
 * ignored by the proxy once old and swept by the agent; LRU bounds the rest. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ECNET_CONN_ORIGDST_MAX);
	__type(key, struct ecnet_conn_key);
	__type(value, struct ecnet_conn_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ecnet_conn_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ECNET_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ecnet_stats SEC(".maps");

static __always_inline void stat_inc(enum ecnet_stat idx)
{
	__u32 key = idx;
	__u64 *v = bpf_map_lookup_elem(&ecnet_stats, &key);

	/* Atomic even in a per-CPU slot: sock_addr programs run preemptible
	 * (migration disabled only), so two tasks on one CPU can interleave. */
	if (v)
		__sync_fetch_and_add(v, 1);
}

#endif /* __ECNET_MAPS_H */
