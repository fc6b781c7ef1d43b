/* virtio.h — a minimal (and deliberately careless) virtio-mmio driver for the probe's
 * `probe=hostile` attacks: register access, status negotiation and split virtqueues in
 * identity-mapped guest memory. See ../README.md. */
#ifndef PROBE_VIRTIO_H
#define PROBE_VIRTIO_H

#include "probe.h"

/* virtio-mmio windows: micro-vmm's fixed slots (src/devices/virtio/mmio.rs). */
#define VMMIO_BASE   0xd0000000ull
#define VMMIO_STRIDE 0x1000ull
#define VMMIO_SLOTS  8

/* Registers (virtio 1.2 §4.2.2). */
#define R_MAGIC        0x000
#define R_VERSION      0x004
#define R_DEVICE_ID    0x008
#define R_DEV_FEAT     0x010
#define R_DEV_FEAT_SEL 0x014
#define R_DRV_FEAT     0x020
#define R_DRV_FEAT_SEL 0x024
#define R_QUEUE_SEL    0x030
#define R_QUEUE_MAX    0x034
#define R_QUEUE_NUM    0x038
#define R_QUEUE_READY  0x044
#define R_QUEUE_NOTIFY 0x050
#define R_INT_STATUS   0x060
#define R_INT_ACK      0x064
#define R_STATUS       0x070
#define R_DESC_LO      0x080
#define R_DESC_HI      0x084
#define R_DRIVER_LO    0x090
#define R_DRIVER_HI    0x094
#define R_DEVICE_LO    0x0a0
#define R_DEVICE_HI    0x0a4
#define R_GENERATION   0x0fc
#define R_CONFIG       0x100

#define S_ACK         1
#define S_DRIVER      2
#define S_DRIVER_OK   4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 0x40

#define F_NEXT     1
#define F_WRITE    2
#define F_INDIRECT 4

#define VIRTIO_MAGIC 0x74726976u

static inline uint32_t vr(uint64_t base, uint32_t off) { return mmio_rd32(base + off); }
static inline void vw(uint64_t base, uint32_t off, uint32_t v) { mmio_wr32(base + off, v); }

/* A split virtqueue: descriptor table, avail and used rings, one page each. */
struct vq {
	uint64_t desc, avail, used;
	uint16_t size;
	uint16_t avail_idx;   /* what the driver has published */
	uint16_t used_seen;   /* used entries the driver has consumed */
};

void mem_zero(uint64_t addr, uint64_t len);          /* rep stosq, len multiple of 8 */
void mem_fill(uint64_t addr, uint64_t len, uint8_t v);
uint64_t tsc(void);

void vq_init(struct vq *q, uint64_t base, uint16_t size); /* rings at base, +4K, +8K (zeroed) */
void vq_desc(const struct vq *q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next);
void vq_push(struct vq *q, uint16_t head);           /* avail ring entry + idx */
uint16_t vq_used_idx(const struct vq *q);
uint32_t vq_used_id(const struct vq *q, uint16_t n);  /* n-th used entry (mod size) */
uint32_t vq_used_len(const struct vq *q, uint16_t n);
/* Polls until the used idx reaches `want` or about `ms` milliseconds pass; returns it. */
uint16_t vq_wait(const struct vq *q, uint16_t want, uint32_t ms);

/* Reset, ACK|DRIVER, driver features, FEATURES_OK, then each queue's registers and READY.
 * Returns the status read back (FEATURES_OK clear: refused). */
uint32_t dev_setup(uint64_t base, uint64_t features, struct vq *qs, int nq);
/* Sets DRIVER_OK; returns the status read back. */
uint32_t dev_driver_ok(uint64_t base);
void dev_reset(uint64_t base);
/* The window of the first device with this virtio device id, or 0. */
uint64_t dev_find(uint32_t device_id);

uint64_t rnd_next(uint64_t *s);                      /* xorshift64*, seeded by *s */

#endif
