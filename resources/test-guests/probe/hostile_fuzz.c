/* hostile_fuzz.c — `probe=hostile`'s register fuzzer: seeded accesses of every width to
 * every virtio-mmio window (and the empty slot after them), biased towards the registers and
 * values that matter (status sequences, queue sizes, ring addresses in a zeroed arena, in
 * the MMIO hole or straddling the end of RAM), with QueueNotify storms. Ring addresses never
 * point at RAM outside the arena, so a ring the fuzzer manages to activate finds only zeros
 * there (no requests): nothing it does can write the disk. */
#include "hostile.h"

static const uint16_t regs[] = {
	R_DEV_FEAT_SEL, R_DRV_FEAT, R_DRV_FEAT_SEL, R_QUEUE_SEL, R_QUEUE_NUM, R_QUEUE_READY,
	R_QUEUE_NOTIFY, R_INT_ACK, R_STATUS, R_STATUS, R_STATUS, R_DESC_LO, R_DESC_HI,
	R_DRIVER_LO, R_DRIVER_HI, R_DEVICE_LO, R_DEVICE_HI, R_CONFIG, R_GENERATION, R_MAGIC,
};
#define NREGS (sizeof(regs) / sizeof(regs[0]))

static const uint32_t statuses[] = { 0, 1, 3, 0xb, 0xf, 0x8f, 0x4f, 0x7, 0xff };

static uint32_t value_for(uint32_t reg, uint64_t r, uint64_t ram_end)
{
	uint32_t pick = (uint32_t)(r >> 40) % 4;
	if (pick == 0)
		return (uint32_t)(r >> 8);                   /* anything */
	switch (reg) {
	case R_STATUS:
		return statuses[(r >> 16) % (sizeof(statuses) / sizeof(statuses[0]))];
	case R_QUEUE_NUM:
		return 1u << ((r >> 16) % 10);
	case R_QUEUE_SEL:
	case R_QUEUE_NOTIFY:
		return (uint32_t)(r >> 16) % 4;
	case R_DRV_FEAT:
		return pick == 1 ? 1 : (uint32_t)(1u << 9);     /* VERSION_1 (high) / FLUSH */
	case R_DESC_LO:
	case R_DRIVER_LO:
	case R_DEVICE_LO:
		if (pick == 1)                               /* the zeroed arena */
			return (uint32_t)(H_ARENA + ((r >> 16) & (H_ARENA_LEN - 0x3000) & ~0xfffull));
		if (pick == 2)                               /* straddling the end of RAM */
			return (uint32_t)(ram_end - ((r >> 16) & 0xff0));
		return (uint32_t)(r >> 8) | 0x80000000u;        /* outside RAM */
	default:
		return pick == 1 ? 1 : 0;
	}
}

void hostile_fuzz(uint64_t seed, uint32_t writes, uint64_t ram_end, const uint64_t *bases, int n)
{
	uint64_t s = seed;
	uint32_t nw = 0, nr = 0, notifies = 0, activated = 0, needs_reset = 0;

	mem_zero(H_ARENA, H_ARENA_LEN);
	while (nw < writes) {
		uint64_t r = rnd_next(&s);
		uint64_t base = bases[r % (uint64_t)n];
		uint32_t kind = (uint32_t)(r >> 4) % 64;
		if (kind == 0) {                             /* a QueueNotify storm */
			for (int i = 0; i < 16; i++)
				vw(base, R_QUEUE_NOTIFY, (uint32_t)rnd_next(&s) % 4);
			notifies += 16;
			nw += 16;
			continue;
		}
		uint32_t off = kind < 48 ? regs[(r >> 12) % NREGS] : (uint32_t)(r >> 12) % 0x200;
		uint32_t width = (r >> 24) % 8 == 0 ? 1u << ((r >> 28) % 4) : 4;  /* 1, 2, 4 or 8 */
		off &= ~(width - 1);
		uint64_t a = base + off;
		if ((r >> 32) % 8 == 0) {
			switch (width) {
			case 1: (void)*(volatile uint8_t *)a; break;
			case 2: (void)*(volatile uint16_t *)a; break;
			case 8: (void)*(volatile uint64_t *)a; break;
			default: (void)mmio_rd32(a); break;
			}
			nr++;
			continue;
		}
		uint32_t v = value_for(off, rnd_next(&s), ram_end);
		switch (width) {
		case 1: *(volatile uint8_t *)a = (uint8_t)v; break;
		case 2: *(volatile uint16_t *)a = (uint16_t)v; break;
		case 8: *(volatile uint64_t *)a = (uint64_t)v | (uint64_t)v << 32; break;
		default: mmio_wr32(a, v); break;
		}
		nw++;
		if (off == R_STATUS && width == 4) {
			uint32_t st = vr(base, R_STATUS);
			activated += (st & S_DRIVER_OK) != 0 && (v & S_DRIVER_OK) != 0;
			needs_reset += (st & S_NEEDS_RESET) != 0;
		}
	}
	hostile_line("fuzz", "writes", nw, "reads", nr, "notifies", notifies);
	/* Status writes that left DRIVER_OK set (the device took the queues) or showed
	 * DEVICE_NEEDS_RESET: how deep the fuzzer got. */
	hostile_line("fuzz-states", "driver_ok", activated, "needs_reset", needs_reset, NULL, 0);
}
