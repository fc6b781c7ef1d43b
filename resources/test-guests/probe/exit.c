/* exit.c — the probe's `exit=<action>` implementations (poweroff, resets,
 * triple fault, pvpanic, KVM internal error, halt, unclaimed MMIO/PIO). */
#include "probe.h"

#define FADT_RESET_REG    116
#define FADT_RESET_VALUE  128
#define FADT_SLEEP_CTL    244
#define GAS_MEMORY        0
#define GAS_IO            1
#define S5_SLP_EN         ((5 << 2) | 0x20)   /* 0x34 */

static int is(const char *s, size_t n, const char *lit)
{
	size_t i = 0;
	for (; i < n; i++)
		if (lit[i] != s[i])
			return 0;
	return lit[i] == 0;
}

static void poweroff(const struct bootinfo *bi)
{
	struct acpi a;
	struct gas g = { 0, 0, 0, 0, 0 };

	acpi_locate(bi, &a);
	if (a.fadt && acpi_len(a.fadt) >= FADT_SLEEP_CTL + 12)
		g = acpi_gas(a.fadt, FADT_SLEEP_CTL);
	if (g.space == GAS_IO && g.addr && g.addr <= 0xffff)
		outb((uint16_t)g.addr, S5_SLP_EN);
	else if (g.space == GAS_MEMORY && g.addr && g.addr < (1ull << 32))
		mmio_wr8(g.addr, S5_SLP_EN);
	else
		outb(0x600, S5_SLP_EN);
}

static void reset_acpi(const struct bootinfo *bi)
{
	struct acpi a;
	struct gas g = { 0, 0, 0, 0, 0 };
	uint8_t val = 0;

	acpi_locate(bi, &a);
	if (a.fadt && acpi_len(a.fadt) > FADT_RESET_VALUE) {
		g = acpi_gas(a.fadt, FADT_RESET_REG);
		val = rd8(a.fadt + FADT_RESET_VALUE);
	}
	if (g.space == GAS_IO && g.addr && g.addr <= 0xffff)
		outb((uint16_t)g.addr, val);
	else if (g.space == GAS_MEMORY && g.addr && g.addr < (1ull << 32))
		mmio_wr8(g.addr, val);
	else
		outb(0xcf9, 0x06);
}

static void triple_fault(void)
{
	static const struct __attribute__((packed)) { uint16_t limit; uint64_t base; } null_idt = { 0, 0 };

	__asm__ volatile(
		"cli\n\t"
		"lidt %0\n\t"
		/* #GP: load through a non-canonical address -> #DF -> shutdown */
		"movabs $0x8000000000000000, %%rax\n\t"
		"mov (%%rax), %%rax\n\t"
		/* not reached; fall back to #UD */
		"ud2"
		: : "m"(null_idt) : "rax", "memory");
}

void do_exit(const struct bootinfo *bi, const char *act, size_t len)
{
	put_str("PROBE-EXIT ");
	put_strn(act, len);
	put_nl();

	if (is(act, len, "poweroff")) {
		poweroff(bi);
	} else if (is(act, len, "reset-acpi")) {
		reset_acpi(bi);
	} else if (is(act, len, "i8042")) {
		outb(0x64, 0xfe);
	} else if (is(act, len, "triple")) {
		triple_fault();
	} else if (is(act, len, "panic")) {
		uint8_t caps = inb(0x505);
		put_str("PVPANIC caps=");
		put_hex(caps);
		put_nl();
		outb(0x505, 0x01);
	} else if (is(act, len, "internal")) {
		/* Not emulated by this host's KVM (kvm_pvm) -> KVM_EXIT_INTERNAL_ERROR. */
		__asm__ volatile("xor %%ecx, %%ecx\n\txgetbv" : : : "eax", "ecx", "edx");
	} else if (is(act, len, "halt")) {
		/* nothing: fall through to cli; hlt */
	} else if (is(act, len, "mmio")) {
		mmio_wr8(0xd0000000, 0x5a);
		put_str("MMIO read=");
		put_hex(mmio_rd8(0xd0000000));
		put_nl();
		put_str("PIO read=");
		put_hex(inb(0x3e8));
		put_nl();
		poweroff(bi);
	} else {
		put_str("PROBE-ERROR unknown exit action, powering off\n");
		poweroff(bi);
	}
	cpu_halt_forever();
	__builtin_unreachable();
}
