/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* 16-byte address helpers: IPv4 is kept IPv4-mapped (::ffff:a.b.c.d). */
#ifndef __ECNET_ADDR_H
#define __ECNET_ADDR_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

static __always_inline void addr_from_v4(__u8 addr[16], __be32 ip4)
{
	__u32 *w = (__u32 *)addr;

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffff);
	w[3] = ip4;
}

/* ctx fields such as user_ip6[] must be read one 32-bit word at a time. */
static __always_inline void addr_from_v6(__u8 addr[16], const __u32 w0, const __u32 w1,
					 const __u32 w2, const __u32 w3)
{
	__u32 *w = (__u32 *)addr;

	w[0] = w0;
	w[1] = w1;
	w[2] = w2;
	w[3] = w3;
}

static __always_inline int addr_is_v4mapped(const __u8 addr[16])
{
	const __u32 *w = (const __u32 *)addr;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

static __always_inline __be32 addr_v4(const __u8 addr[16])
{
	return ((const __u32 *)addr)[3];
}

#endif /* __ECNET_ADDR_H */
