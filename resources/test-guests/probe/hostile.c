/* hostile.c — `probe=hostile`: finds micro-vmm's virtio-blk and virtio-vsock windows, runs
 * the attacks (hostile_blk.c, hostile_vsock.c, hostile_fuzz.c), then shows that the devices
 * still serve a well-behaved driver. Command-line tokens: `seed=<n>` (the fuzzer's seed,
 * decimal or 0x hex; default 1) and `fuzz=<n>` (register accesses; default 3000). */
#include "hostile.h"

void hostile_line(const char *what, const char *k1, uint64_t v1, const char *k2, uint64_t v2,
		  const char *k3, uint64_t v3)
{
	put_str("HOSTILE ");
	put_str(what);
	const char *keys[3] = { k1, k2, k3 };
	uint64_t vals[3] = { v1, v2, v3 };
	for (int i = 0; i < 3 && keys[i]; i++) {
		serial_putc(' ');
		put_str(keys[i]);
		serial_putc('=');
		put_dec(vals[i]);
	}
	put_nl();
}

/* End of the highest RAM range below 4 GiB in the boot memory map. */
static uint64_t ram_end(const struct bootinfo *bi)
{
	uint64_t end = 0;
	for (uint32_t i = 0; i < bi->memmap_entries && i < 128; i++) {
		uint64_t e = bi->memmap + (uint64_t)i * bi->memmap_stride;
		uint64_t a = rd64(e), n = rd64(e + 8);
		if (rd32(e + 16) == 1 && a + n <= (1ull << 32) && a + n > end)
			end = a + n;
	}
	return end;
}

/* The value of the command-line token `<key>=<number>`, or `dflt`. */
static uint64_t cmdline_num(const char *cmdline, const char *key, uint64_t dflt)
{
	for (const char *p = cmdline; *p;) {
		while (*p == ' ')
			p++;
		const char *k = key;
		while (*k && *p == *k) {
			p++;
			k++;
		}
		if (!*k && *p == '=') {
			p++;
			uint64_t v = 0, radix = 10;
			if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
				radix = 16;
				p += 2;
			}
			for (;; p++) {
				uint64_t d;
				if (*p >= '0' && *p <= '9')
					d = (uint64_t)(*p - '0');
				else if (radix == 16 && *p >= 'a' && *p <= 'f')
					d = (uint64_t)(*p - 'a' + 10);
				else
					break;
				v = v * radix + d;
			}
			return v;
		}
		while (*p && *p != ' ')
			p++;
	}
	return dflt;
}

void probe_hostile(const struct bootinfo *bi)
{
	uint64_t seed = cmdline_num(bi->cmdline, "seed", 1);
	uint64_t writes = cmdline_num(bi->cmdline, "fuzz", 3000);
	uint64_t end = ram_end(bi);
	uint64_t blk = dev_find(2), vsock = dev_find(19);

	put_str("HOSTILE START seed=");
	put_dec(seed);
	put_str(" ram_end=");
	put_hex(end);
	put_str(" blk=");
	put_hex(blk);
	put_str(" vsock=");
	put_hex(vsock);
	put_nl();
	if (end < H_MIN_RAM || !blk || !vsock) {
		put_str("HOSTILE ERROR needs --mem 32 or more, a disk and vsock\n");
		return;
	}

	hostile_blk(blk, end);
	hostile_vsock(vsock, end);

	/* Every window, plus the empty slot after the last device. */
	uint64_t bases[VMMIO_SLOTS];
	int n = 0;
	for (; n < VMMIO_SLOTS; n++) {
		bases[n] = VMMIO_BASE + (uint64_t)n * VMMIO_STRIDE;
		if (vr(bases[n], R_MAGIC) != VIRTIO_MAGIC) {
			n++;
			break;
		}
	}
	hostile_fuzz(seed, (uint32_t)writes, end, bases, n);
	dev_reset(blk);
	dev_reset(vsock);

	int blk_ok = hostile_blk_final(blk);
	int vsock_ok = hostile_vsock_final(vsock);
	put_str(blk_ok ? "HOSTILE FINAL blk ok\n" : "HOSTILE FINAL blk FAILED\n");
	put_str(vsock_ok ? "HOSTILE FINAL vsock ok\n" : "HOSTILE FINAL vsock FAILED\n");
	put_str("HOSTILE DONE\n");
}
