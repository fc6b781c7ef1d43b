/* hostile_blk.c — `probe=hostile` against virtio-blk: requests before DRIVER_OK, chains
 * over SEG_MAX / SIZE_MAX, loops, indirect tables, buffers and rings outside RAM (in the
 * MMIO hole, above 4 GiB, straddling the end of RAM), bogus ring indices, a request flood
 * and hundreds of reset/activate cycles; then `hostile_blk_final`, a well-behaved write,
 * flush and read back. Every poison write targets sectors from POISON_SECTOR on: the test
 * checks that none of them reached the disk. */
#include "hostile.h"

#define T_IN     0
#define T_OUT    1
#define T_FLUSH  4
#define T_GET_ID 8
#define BLK_FEATURES ((1ull << 32) | (1ull << 9))   /* VERSION_1 | FLUSH */
#define SIZE_MAX_BYTES (256u << 10)
#define SEG_MAX 128
#define UNTOUCHED 0xff

static struct vq q;

static uint64_t hdr(int slot, uint32_t type, uint64_t sector)
{
	uint64_t h = H_BLK_HDR + (uint64_t)slot * 16;
	*(volatile uint32_t *)h = type;
	*(volatile uint32_t *)(h + 4) = 0;
	*(volatile uint64_t *)(h + 8) = sector;
	return h;
}

static uint64_t st(int slot)
{
	uint64_t s = H_BLK_STATUS + (uint64_t)slot * 4;
	*(volatile uint8_t *)s = UNTOUCHED;
	return s;
}

static uint32_t blk_up(uint64_t base)
{
	vq_init(&q, H_BLK_Q, 256);
	dev_setup(base, BLK_FEATURES, &q, 1);
	return dev_driver_ok(base);
}

/* A three-descriptor request at descriptors d, d+1, d+2 (header, data, status). */
static void req3(int d, int slot, uint32_t type, uint64_t sector, uint64_t data, uint32_t len)
{
	uint16_t dflag = type == T_IN ? F_WRITE : 0;
	vq_desc(&q, (uint16_t)d, hdr(slot, type, sector), 16, F_NEXT, (uint16_t)(d + 1));
	vq_desc(&q, (uint16_t)(d + 1), data, len, F_NEXT | dflag, (uint16_t)(d + 2));
	vq_desc(&q, (uint16_t)(d + 2), st(slot), 1, F_WRITE, 0);
}

/* Publishes head, notifies, waits; prints "HOSTILE blk <name> used=.. status=.. dev=..". */
static void run_case(uint64_t base, const char *name, uint16_t head, int slot)
{
	uint16_t before = vq_used_idx(&q);
	vq_push(&q, head);
	vw(base, R_QUEUE_NOTIFY, 0);
	uint16_t after = vq_wait(&q, q.avail_idx, 1000);
	hostile_line(name, "used", (uint16_t)(after - before), "status",
		     rd8(H_BLK_STATUS + (uint64_t)slot * 4), "dev", vr(base, R_STATUS));
}

static void early(uint64_t base)
{
	/* Queued and notified, then reset without DRIVER_OK: never served. */
	vq_init(&q, H_BLK_Q, 256);
	dev_setup(base, BLK_FEATURES, &q, 1);
	mem_fill(H_BLK_DATA, 512, POISON_BYTE);
	req3(0, 0, T_OUT, POISON_SECTOR, H_BLK_DATA, 512);
	vq_push(&q, 0);
	for (int i = 0; i < 20; i++)
		vw(base, R_QUEUE_NOTIFY, 0);
	spin(20000);
	dev_reset(base);
	hostile_line("blk early-reset", "used", vq_used_idx(&q), "status", rd8(H_BLK_STATUS), "dev",
		     vr(base, R_STATUS));

	/* Queued and notified before DRIVER_OK, then DRIVER_OK: served then. */
	vq_init(&q, H_BLK_Q, 256);
	dev_setup(base, BLK_FEATURES, &q, 1);
	mem_fill(H_BLK_DATA, 512, 'E');
	req3(0, 0, T_OUT, EARLY_SECTOR, H_BLK_DATA, 512);
	vq_push(&q, 0);
	for (int i = 0; i < 3; i++)
		vw(base, R_QUEUE_NOTIFY, 0);
	uint32_t s = dev_driver_ok(base);
	uint16_t used = vq_wait(&q, 1, 1000);
	hostile_line("blk early-served", "used", used, "status", rd8(H_BLK_STATUS), "dev", s);
}

static void bad_chains(uint64_t base, uint64_t ram_end)
{
	blk_up(base);
	mem_fill(H_BLK_DATA, 0x80000, POISON_BYTE);

	/* SEG_MAX + 1 data segments of 512 bytes. */
	vq_desc(&q, 0, hdr(0, T_OUT, POISON_SECTOR + 10), 16, F_NEXT, 1);
	for (int i = 1; i <= SEG_MAX + 1; i++)
		vq_desc(&q, (uint16_t)i, H_BLK_DATA + (uint64_t)i * 512, 512, F_NEXT, (uint16_t)(i + 1));
	vq_desc(&q, SEG_MAX + 2, st(0), 1, F_WRITE, 0);
	run_case(base, "blk segmax", 0, 0);

	/* One segment of SIZE_MAX + 512 bytes; one of 4 GiB - 1. */
	req3(0, 0, T_OUT, POISON_SECTOR + 20, H_BLK_DATA, SIZE_MAX_BYTES + 512);
	run_case(base, "blk sizemax", 0, 0);
	req3(0, 0, T_OUT, POISON_SECTOR + 30, H_BLK_DATA, 0xffffffffu);
	run_case(base, "blk huge-len", 0, 0);

	/* A loop: 0 -> 1 -> 0. */
	vq_desc(&q, 0, hdr(0, T_OUT, POISON_SECTOR + 40), 16, F_NEXT, 1);
	vq_desc(&q, 1, H_BLK_DATA, 512, F_NEXT, 0);
	st(0);
	run_case(base, "blk loop", 0, 0);

	/* An indirect table holding a well-formed poison write (not negotiated). */
	uint64_t table = H_BLK_DATA + 0x300000;
	uint64_t h = hdr(1, T_OUT, POISON_SECTOR + 50);
	uint64_t s = st(0);
	*(volatile uint64_t *)table = h;
	*(volatile uint32_t *)(table + 8) = 16;
	*(volatile uint32_t *)(table + 12) = F_NEXT | 1u << 16;
	*(volatile uint64_t *)(table + 16) = H_BLK_DATA;
	*(volatile uint32_t *)(table + 24) = 512;
	*(volatile uint32_t *)(table + 28) = F_NEXT | 2u << 16;
	*(volatile uint64_t *)(table + 32) = s;
	*(volatile uint32_t *)(table + 40) = 1;
	*(volatile uint32_t *)(table + 44) = F_WRITE;
	vq_desc(&q, 0, table, 48, F_INDIRECT, 0);
	run_case(base, "blk indirect", 0, 0);

	/* A next index past the table. */
	vq_desc(&q, 0, hdr(0, T_OUT, POISON_SECTOR + 60), 16, F_NEXT, 300);
	st(0);
	run_case(base, "blk next-oob", 0, 0);

	/* Buffers in the MMIO hole and straddling the end of RAM; a status byte in the hole. */
	req3(0, 0, T_OUT, POISON_SECTOR + 70, 0xd0100000ull, 512);
	run_case(base, "blk buffer-hole", 0, 0);
	req3(0, 0, T_OUT, POISON_SECTOR + 80, ram_end - 256, 512);
	run_case(base, "blk buffer-straddle", 0, 0);
	req3(0, 0, T_IN, 0, 0x100000000ull, 512);
	run_case(base, "blk buffer-high", 0, 0);
	req3(0, 0, T_IN, 0, H_BLK_DATA + 0x200000, 512);
	vq_desc(&q, 2, 0xfec00000ull, 1, F_WRITE, 0);
	run_case(base, "blk status-hole", 0, 0);

	/* Sectors past the end, a length that is not whole sectors, a writable header. */
	req3(0, 0, T_OUT, 0xffffffffffffff00ull, H_BLK_DATA, 1024);
	run_case(base, "blk sector-overflow", 0, 0);
	req3(0, 0, T_OUT, 1ull << 40, H_BLK_DATA, 512);
	run_case(base, "blk sector-past-end", 0, 0);
	req3(0, 0, T_OUT, POISON_SECTOR + 90, H_BLK_DATA, 100);
	run_case(base, "blk unaligned", 0, 0);
	vq_desc(&q, 0, hdr(0, T_OUT, POISON_SECTOR + 95), 16, F_NEXT | F_WRITE, 1);
	vq_desc(&q, 1, H_BLK_DATA, 512, F_NEXT, 2);
	vq_desc(&q, 2, st(0), 1, F_WRITE, 0);
	run_case(base, "blk header-writable", 0, 0);
}

/* Rounds of 85 three-descriptor requests of mixed kinds, a notify after each. */
static void flood(uint64_t base)
{
	uint32_t counts[4] = { 0, 0, 0, 0 };  /* ok, ioerr, unsupp, untouched */
	uint32_t used_total = 0, sent = 0;

	blk_up(base);
	for (int round = 0; round < 3; round++) {
		uint16_t before = vq_used_idx(&q);
		for (int r = 0; r < 85; r++) {
			int d = r * 3, slot = r;
			switch ((r + round) % 6) {
			case 0:	/* a read of a real sector */
				req3(d, slot, T_IN, (uint64_t)r, H_BLK_DATA + (uint64_t)r * 512, 512);
				break;
			case 1:	/* a poison write past the end */
				req3(d, slot, T_OUT, 1ull << 32, H_BLK_DATA, 512);
				break;
			case 2:	/* a self loop */
				vq_desc(&q, (uint16_t)d, hdr(slot, T_OUT, POISON_SECTOR), 16, F_NEXT, (uint16_t)d);
				st(slot);
				break;
			case 3:	/* unsupported type */
				req3(d, slot, 11, 0, H_BLK_DATA, 512);
				break;
			case 4:	/* GET_ID */
				req3(d, slot, T_GET_ID, 0, H_BLK_DATA + 0x100000 + (uint64_t)r * 32, 20);
				break;
			default: /* indirect */
				vq_desc(&q, (uint16_t)d, H_BLK_DATA + 0x300000, 48, F_INDIRECT, 0);
				st(slot);
				break;
			}
			vq_push(&q, (uint16_t)d);
			vw(base, R_QUEUE_NOTIFY, 0);
			sent++;
		}
		uint16_t after = vq_wait(&q, q.avail_idx, 3000);
		used_total += (uint16_t)(after - before);
		for (int r = 0; r < 85; r++) {
			uint8_t s = rd8(H_BLK_STATUS + (uint64_t)r * 4);
			counts[s <= 2 ? s : 3]++;
		}
	}
	hostile_line("blk flood", "requests", sent, "used", used_total, "ok", counts[0]);
	hostile_line("blk flood-status", "ioerr", counts[1], "unsupp", counts[2], "untouched", counts[3]);
}

/* Ring indices the device cannot follow, and rings the device must refuse. */
static void bad_rings(uint64_t base, uint64_t ram_end)
{
	blk_up(base);
	*(volatile uint16_t *)(q.avail + 2) = (uint16_t)(q.avail_idx + 1000);
	vw(base, R_QUEUE_NOTIFY, 0);
	spin(200000);
	hostile_line("blk avail-jump", "dev", vr(base, R_STATUS), NULL, 0, NULL, 0);

	blk_up(base);
	vq_push(&q, 999);
	vw(base, R_QUEUE_NOTIFY, 0);
	spin(200000);
	hostile_line("blk head-oob", "dev", vr(base, R_STATUS), NULL, 0, NULL, 0);

	static const char *const names[] = {
		"blk ring-desc-hole", "blk ring-used-high", "blk ring-used-straddle",
		"blk ring-desc-straddle", "blk ring-avail-hole", "blk ring-avail-zero",
	};
	for (int i = 0; i < 6; i++) {
		vq_init(&q, H_BLK_Q, 256);
		switch (i) {
		case 0: q.desc = 0xd0200000ull; break;
		case 1: q.used = 0x100000000ull; break;
		case 2: q.used = ram_end - 1024; break;
		case 3: q.desc = ram_end - 2048; break;
		case 4: q.avail = 0xfee00000ull; break;
		default: q.avail = 0; break;
		}
		dev_setup(base, BLK_FEATURES, &q, 1);
		uint32_t s = dev_driver_ok(base);
		vw(base, R_QUEUE_NOTIFY, 0);
		spin(200000);
		hostile_line(names[i], "activate", s, "dev", vr(base, R_STATUS), NULL, 0);
	}
}

/* Reset/activate cycles, every other one with a request queued and notified. */
static void reset_loop(uint64_t base)
{
	uint32_t activated = 0, cycles = 300;
	vq_init(&q, H_BLK_Q, 256);
	for (uint32_t i = 0; i < cycles; i++) {
		q.avail_idx = 0;
		*(volatile uint16_t *)(q.avail + 2) = 0;
		*(volatile uint16_t *)(q.used + 2) = 0;
		dev_setup(base, BLK_FEATURES, &q, 1);
		if (i & 1) {
			req3(0, 0, T_IN, i, H_BLK_DATA, 512);
			vq_push(&q, 0);
		}
		if (dev_driver_ok(base) & S_DRIVER_OK)
			activated++;
		vw(base, R_QUEUE_NOTIFY, 0);
		dev_reset(base);
	}
	hostile_line("blk reset-loop", "cycles", cycles, "activated", activated, "dev",
		     vr(base, R_STATUS));
}

void hostile_blk(uint64_t base, uint64_t ram_end)
{
	early(base);
	bad_chains(base, ram_end);
	flood(base);
	bad_rings(base, ram_end);
	reset_loop(base);
	dev_reset(base);
}

int hostile_blk_final(uint64_t base)
{
	const uint64_t len = FINAL_SECTORS * 512, out = H_BLK_DATA, in = H_BLK_DATA + 0x10000;
	int ok = (blk_up(base) & S_DRIVER_OK) != 0;

	for (uint64_t i = 0; i < len; i++) {
		*(volatile uint8_t *)(out + i) = (uint8_t)(i * 13 + 7);
		*(volatile uint8_t *)(in + i) = 0;
	}
	req3(0, 0, T_OUT, 0, out, (uint32_t)len);
	vq_desc(&q, 3, hdr(1, T_FLUSH, 0), 16, F_NEXT, 4);
	vq_desc(&q, 4, st(1), 1, F_WRITE, 0);
	req3(5, 2, T_IN, 0, in, (uint32_t)len);
	vq_push(&q, 0);
	vq_push(&q, 3);
	vq_push(&q, 5);
	vw(base, R_QUEUE_NOTIFY, 0);
	ok &= vq_wait(&q, 3, 2000) == 3;
	for (int s = 0; s < 3; s++)
		ok &= rd8(H_BLK_STATUS + (uint64_t)s * 4) == 0;
	for (uint64_t i = 0; i < len; i++)
		ok &= rd8(in + i) == (uint8_t)(i * 13 + 7);
	hostile_line("blk final", "ok", (uint64_t)ok, "dev", vr(base, R_STATUS), NULL, 0);
	dev_reset(base);
	return ok;
}
