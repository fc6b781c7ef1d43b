/* bootinfo.c — reads the boot information the loader passed to the probe:
 * the Linux zero page (boot_params; ELF64 and bzImage entries) or the PVH
 * struct hvm_start_info, and implements `probe=bootinfo`. */
#include "probe.h"

/* Linux boot_params (zero page) offsets */
#define ZP_ACPI_RSDP      0x070  /* u64 */
#define ZP_EXT_RAMDISK    0x0c0  /* u32 high half of ramdisk_image */
#define ZP_EXT_RAMDISK_SZ 0x0c4  /* u32 high half of ramdisk_size */
#define ZP_EXT_CMDLINE    0x0c8  /* u32 high half of cmd_line_ptr */
#define ZP_E820_ENTRIES   0x1e8  /* u8 */
#define ZP_RAMDISK_IMAGE  0x218  /* u32 */
#define ZP_RAMDISK_SIZE   0x21c  /* u32 */
#define ZP_CMD_LINE_PTR   0x228  /* u32 */
#define ZP_E820_TABLE     0x2d0  /* 20-byte entries */

/* struct hvm_start_info offsets */
#define SI_MAGIC          0x00
#define SI_VERSION        0x04
#define SI_NR_MODULES     0x0c
#define SI_MODLIST        0x10
#define SI_CMDLINE        0x18
#define SI_RSDP           0x20
#define SI_MEMMAP         0x28
#define SI_MEMMAP_ENTRIES 0x30

void bootinfo_parse(struct bootinfo *bi, uint64_t info, int kind)
{
	uint64_t cmdline;

	bi->kind = kind;
	bi->info = info;
	bi->initrd_addr = bi->initrd_size = 0;
	bi->memmap = 0;
	bi->memmap_entries = 0;
	bi->pvh_magic = bi->pvh_version = 0;

	if (kind == ENTRY_PVH) {
		bi->pvh_magic = rd32(info + SI_MAGIC);
		bi->pvh_version = rd32(info + SI_VERSION);
		cmdline = rd64(info + SI_CMDLINE);
		bi->rsdp = rd64(info + SI_RSDP);
		if (bi->pvh_version >= 1) {
			bi->memmap = rd64(info + SI_MEMMAP);
			bi->memmap_entries = rd32(info + SI_MEMMAP_ENTRIES);
		}
		bi->memmap_stride = 24;
		if (rd32(info + SI_NR_MODULES) != 0) {
			uint64_t mod = rd64(info + SI_MODLIST);
			if (mod) {
				bi->initrd_addr = rd64(mod + 0);
				bi->initrd_size = rd64(mod + 8);
			}
		}
	} else {
		cmdline = rd32(info + ZP_CMD_LINE_PTR) |
			  ((uint64_t)rd32(info + ZP_EXT_CMDLINE) << 32);
		bi->rsdp = rd64(info + ZP_ACPI_RSDP);
		bi->memmap = info + ZP_E820_TABLE;
		bi->memmap_entries = rd8(info + ZP_E820_ENTRIES);
		if (bi->memmap_entries > 128)
			bi->memmap_entries = 128;
		bi->memmap_stride = 20;
		bi->initrd_addr = rd32(info + ZP_RAMDISK_IMAGE) |
				  ((uint64_t)rd32(info + ZP_EXT_RAMDISK) << 32);
		bi->initrd_size = rd32(info + ZP_RAMDISK_SIZE) |
				  ((uint64_t)rd32(info + ZP_EXT_RAMDISK_SZ) << 32);
	}
	/* Only the identity-mapped first 4 GiB are reachable. */
	bi->cmdline = (cmdline && cmdline < (1ull << 32)) ? (const char *)cmdline : "";
}

/* 32-bit wrapping sum of all bytes. Adds eight bytes per iteration in 16-bit
 * lanes (guest ring-0 code is emulated at ~1M instructions/s here). */
static uint32_t byte_sum(uint64_t p, uint64_t n)
{
	const uint64_t m = 0x00ff00ff00ff00ffull;
	uint32_t s = 0;

	while (n && (p & 7)) {
		s += rd8(p++);
		n--;
	}
	while (n >= 8) {
		uint64_t words = n / 8, acc = 0;
		if (words > 128)   /* each lane grows by <= 510 per word */
			words = 128;
		const uint64_t *w = (const uint64_t *)p;
		for (uint64_t i = 0; i < words; i++) {
			uint64_t x = w[i];
			acc += (x & m) + ((x >> 8) & m);
		}
		s += (uint32_t)((acc & 0xffff) + ((acc >> 16) & 0xffff) +
				((acc >> 32) & 0xffff) + (acc >> 48));
		p += words * 8;
		n -= words * 8;
	}
	while (n--)
		s += rd8(p++);
	return s;
}

void probe_bootinfo(const struct bootinfo *bi)
{
	if (bi->kind == ENTRY_PVH) {
		put_str("PVH magic=");
		put_hex(bi->pvh_magic);
		put_str(" version=");
		put_dec(bi->pvh_version);
		put_nl();
	}

	for (uint32_t i = 0; i < bi->memmap_entries; i++) {
		uint64_t e = bi->memmap + (uint64_t)i * bi->memmap_stride;
		put_str("E820 ");
		put_hex(rd64(e));
		serial_putc(' ');
		put_hex(rd64(e + 8));
		serial_putc(' ');
		put_dec(rd32(e + 16));
		put_nl();
	}

	put_str("CMDLINE ");
	put_str(bi->cmdline);
	put_nl();

	if (bi->initrd_size == 0) {
		put_str("INITRD none\n");
	} else {
		put_str("INITRD ");
		put_hex(bi->initrd_addr);
		serial_putc(' ');
		put_hex(bi->initrd_size);
		serial_putc(' ');
		/* Beyond the identity map (4 GiB) we can't read it: sum 0x0. */
		put_hex(bi->initrd_addr + bi->initrd_size <= (1ull << 32) ?
			byte_sum(bi->initrd_addr, bi->initrd_size) : 0);
		put_nl();
	}

	put_str("RSDP ");
	put_hex(bi->rsdp);
	put_nl();
}
