/* virtio.c — the probe's minimal virtio-mmio driver (see virtio.h): device discovery at
 * micro-vmm's fixed slots, status negotiation, split virtqueues. */
#include "virtio.h"

void mem_zero(uint64_t addr, uint64_t len)
{
	uint64_t n = len / 8;
	__asm__ volatile("rep stosq" : "+D"(addr), "+c"(n) : "a"(0ull) : "memory");
}

void mem_fill(uint64_t addr, uint64_t len, uint8_t v)
{
	__asm__ volatile("rep stosb" : "+D"(addr), "+c"(len) : "a"(v) : "memory");
}

uint64_t tsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

void vq_init(struct vq *q, uint64_t base, uint16_t size)
{
	q->desc = base;
	q->avail = base + 0x1000;
	q->used = base + 0x2000;
	q->size = size;
	q->avail_idx = 0;
	q->used_seen = 0;
	mem_zero(base, 0x3000);
}

void vq_desc(const struct vq *q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	uint64_t d = q->desc + (uint64_t)(i % q->size) * 16;
	*(volatile uint64_t *)d = addr;
	*(volatile uint32_t *)(d + 8) = len;
	*(volatile uint16_t *)(d + 12) = flags;
	*(volatile uint16_t *)(d + 14) = next;
}

void vq_push(struct vq *q, uint16_t head)
{
	*(volatile uint16_t *)(q->avail + 4 + (uint64_t)(q->avail_idx % q->size) * 2) = head;
	q->avail_idx++;
	__asm__ volatile("" ::: "memory");  /* x86 keeps stores in order */
	*(volatile uint16_t *)(q->avail + 2) = q->avail_idx;
}

uint16_t vq_used_idx(const struct vq *q)
{
	return *(volatile uint16_t *)(q->used + 2);
}

uint32_t vq_used_id(const struct vq *q, uint16_t n)
{
	return *(volatile uint32_t *)(q->used + 4 + (uint64_t)(n % q->size) * 8);
}

uint32_t vq_used_len(const struct vq *q, uint16_t n)
{
	return *(volatile uint32_t *)(q->used + 8 + (uint64_t)(n % q->size) * 8);
}

/* The TSC rate is unknown; 2.5e6 cycles per ms is close enough for bounds. */
#define CYCLES_PER_MS 2500000ull

uint16_t vq_wait(const struct vq *q, uint16_t want, uint32_t ms)
{
	uint64_t end = tsc() + ms * CYCLES_PER_MS;
	uint16_t got;
	while ((got = vq_used_idx(q)) != want && tsc() < end)
		spin(50);
	return got;
}

void dev_reset(uint64_t base)
{
	vw(base, R_STATUS, 0);
}

uint32_t dev_setup(uint64_t base, uint64_t features, struct vq *qs, int nq)
{
	dev_reset(base);
	vw(base, R_STATUS, S_ACK);
	vw(base, R_STATUS, S_ACK | S_DRIVER);
	vw(base, R_DRV_FEAT_SEL, 0);
	vw(base, R_DRV_FEAT, (uint32_t)features);
	vw(base, R_DRV_FEAT_SEL, 1);
	vw(base, R_DRV_FEAT, (uint32_t)(features >> 32));
	vw(base, R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
	for (int i = 0; i < nq; i++) {
		struct vq *q = &qs[i];
		vw(base, R_QUEUE_SEL, (uint32_t)i);
		vw(base, R_QUEUE_NUM, q->size);
		vw(base, R_DESC_LO, (uint32_t)q->desc);
		vw(base, R_DESC_HI, (uint32_t)(q->desc >> 32));
		vw(base, R_DRIVER_LO, (uint32_t)q->avail);
		vw(base, R_DRIVER_HI, (uint32_t)(q->avail >> 32));
		vw(base, R_DEVICE_LO, (uint32_t)q->used);
		vw(base, R_DEVICE_HI, (uint32_t)(q->used >> 32));
		vw(base, R_QUEUE_READY, 1);
	}
	return vr(base, R_STATUS);
}

uint32_t dev_driver_ok(uint64_t base)
{
	vw(base, R_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
	return vr(base, R_STATUS);
}

uint64_t dev_find(uint32_t device_id)
{
	for (int i = 0; i < VMMIO_SLOTS; i++) {
		uint64_t base = VMMIO_BASE + (uint64_t)i * VMMIO_STRIDE;
		if (vr(base, R_MAGIC) == VIRTIO_MAGIC && vr(base, R_DEVICE_ID) == device_id)
			return base;
	}
	return 0;
}

/* xorshift64* */
uint64_t rnd_next(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}
