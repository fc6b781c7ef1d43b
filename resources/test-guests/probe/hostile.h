/* hostile.h — the probe's `probe=hostile` guest: a malicious virtio driver against
 * micro-vmm's virtio-blk and virtio-vsock devices (../README.md lists the attacks and the
 * output lines). */
#ifndef PROBE_HOSTILE_H
#define PROBE_HOSTILE_H

#include "virtio.h"

/* Guest-physical scratch (needs --mem 64 or more; identity mapped). */
#define H_BLK_Q      0x0400000ull   /* blk queue: desc, avail, used (3 pages) */
#define H_VS_RXQ     0x0410000ull   /* vsock queues */
#define H_VS_TXQ     0x0420000ull
#define H_VS_EVQ     0x0430000ull
#define H_BLK_HDR    0x0500000ull   /* request headers, 16 bytes each */
#define H_BLK_STATUS 0x0510000ull   /* status bytes, 1 each (stride 4) */
#define H_BLK_DATA   0x0600000ull   /* data buffers, up to 4 MiB */
#define H_VS_RXBUF   0x0a00000ull   /* vsock RX buffers, 4 KiB each */
#define H_VS_TXHDR   0x0b00000ull   /* vsock TX headers, 64-byte stride */
#define H_VS_TXDATA  0x0c00000ull   /* vsock TX data, up to 1 MiB */
#define H_ARENA      0x1000000ull   /* the fuzzer's rings point here (zeroed) */
#define H_ARENA_LEN  0x0100000ull
#define H_MIN_RAM    0x2000000ull

/* Disk sectors: the guest writes 0..7 (final) and 8 (early) legitimately; the poison it
 * tries to write lands from POISON_SECTOR on and must never reach the disk. */
#define FINAL_SECTORS 8
#define EARLY_SECTOR  8
#define POISON_SECTOR 100
#define POISON_BYTE   0xee

/* vsock host ports the test listens on. */
#define VS_PORT_SLOW   5000   /* accepts, reads slowly */
#define VS_PORT_NONE   5001   /* nobody listens */
#define VS_PORT_FINAL  5002   /* reads one line */

void probe_hostile(const struct bootinfo *bi);
/* "HOSTILE <what> k1=v1 k2=v2 k3=v3" (decimal; a NULL key ends the list). */
void hostile_line(const char *what, const char *k1, uint64_t v1, const char *k2, uint64_t v2,
		  const char *k3, uint64_t v3);
void hostile_blk(uint64_t base, uint64_t ram_end);
int hostile_blk_final(uint64_t base);
void hostile_vsock(uint64_t base, uint64_t ram_end);
int hostile_vsock_final(uint64_t base);
void hostile_fuzz(uint64_t seed, uint32_t writes, uint64_t ram_end, const uint64_t *bases, int n);

#endif
