/* probe.h — shared declarations of the micro-vmm "probe" test guest (C part).
 *
 * The probe is a freestanding x86_64 ring-0 program. It is built three ways
 * (ELF64 entry, PVH entry, bzImage entry) from the same C sources; see
 * ../README.md for the boot ABIs and the exact output format.
 */
#ifndef PROBE_H
#define PROBE_H

#include <stdint.h>
#include <stddef.h>

/* How we were entered; passed from the assembly entry code to probe_main(). */
enum entry_kind { ENTRY_ELF64 = 0, ENTRY_PVH = 1, ENTRY_BZIMAGE = 2 };

/* ---- unaligned guest-physical memory access (identity mapped, < 4 GiB) ---- */
static inline uint8_t rd8(uint64_t a)   { return *(volatile const uint8_t *)a; }
static inline uint16_t rd16(uint64_t a) { uint16_t v; __builtin_memcpy(&v, (const void *)a, 2); return v; }
static inline uint32_t rd32(uint64_t a) { uint32_t v; __builtin_memcpy(&v, (const void *)a, 4); return v; }
static inline uint64_t rd64(uint64_t a) { uint64_t v; __builtin_memcpy(&v, (const void *)a, 8); return v; }

/* MMIO accessors (never merged or elided by the compiler). */
static inline void mmio_wr8(uint64_t a, uint8_t v)   { *(volatile uint8_t *)a = v; }
static inline uint8_t mmio_rd8(uint64_t a)           { return *(volatile uint8_t *)a; }
static inline void mmio_wr32(uint64_t a, uint32_t v) { *(volatile uint32_t *)a = v; }
static inline uint32_t mmio_rd32(uint64_t a)         { return *(volatile uint32_t *)a; }

/* ---- port I/O ---- */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline void cpu_halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt");
}

/* Busy-wait: `n` iterations of dec/jnz (~2 instructions each). n must be > 0. */
static inline void spin(uint32_t n)
{
	__asm__ volatile("1: dec %0; jnz 1b" : "+r"(n) : : "cc");
}

/* ---- serial.c: COM1 (0x3f8), polled ---- */
void serial_putc(char c);
void put_str(const char *s);
void put_strn(const char *s, size_t n);
void put_hex(uint64_t v);      /* "0x" + lowercase hex, no leading zeros */
void put_dec(uint64_t v);
void put_nl(void);
void log_put_str(const char *s); /* to COM2 (0x2f8), the log port */
int serial_getc(void);         /* blocks until a byte arrives */

/* ---- bootinfo.c: what the loader handed us ---- */
struct bootinfo {
	int kind;                  /* enum entry_kind */
	uint64_t info;             /* zero page (elf64/bzimage) or hvm_start_info (pvh) */
	const char *cmdline;       /* NUL-terminated, "" if none */
	uint64_t memmap;           /* address of the first memory map entry */
	uint32_t memmap_entries;
	uint32_t memmap_stride;    /* 20 (e820 in zero page) or 24 (PVH) */
	uint64_t initrd_addr, initrd_size;
	uint64_t rsdp;             /* 0 if not given */
	uint32_t pvh_magic, pvh_version;
};
void bootinfo_parse(struct bootinfo *bi, uint64_t info, int kind);
void probe_bootinfo(const struct bootinfo *bi);

/* ---- acpi.c ---- */
struct gas { uint8_t space, width, offset, access; uint64_t addr; };
struct acpi {
	uint64_t rsdp;             /* 0: not found */
	uint64_t fadt, madt, dsdt; /* 0: not present */
};
void acpi_locate(const struct bootinfo *bi, struct acpi *a);   /* silent */
struct gas acpi_gas(uint64_t table, uint32_t off);
uint32_t acpi_len(uint64_t table);
void probe_acpi(const struct bootinfo *bi);
/* Enabled local APIC ids from the MADT; returns the count (ids[] gets up to max). */
int madt_lapic_ids(uint64_t madt, uint32_t *ids, int max);

/* ---- smp.c ---- */
void probe_smp(const struct bootinfo *bi);

/* ---- exit.c ---- */
void do_exit(const struct bootinfo *bi, const char *action, size_t len) __attribute__((noreturn));

/* ---- main.c ---- */
void probe_main(uint64_t info, int kind) __attribute__((noreturn));

#endif
