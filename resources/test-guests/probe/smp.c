/* smp.c — `probe=smp`: wakes every other enabled local APIC listed in the
 * MADT with INIT-SIPI-SIPI into a real-mode trampoline (ap_trampoline.S,
 * copied to 0x40000) and counts how many application processors report in. */
#include "probe.h"

/* Shared with ap_trampoline.S (keep in sync). */
#define SMP_LOCK      0x3f000   /* byte: print spinlock (0 free, 1 taken) */
#define SMP_COUNT     0x3f004   /* u32: APs that came up */
#define TRAMP_ADDR    0x40000   /* SIPI vector 0x40 */

#define LAPIC_BASE    0xfee00000ull
#define LAPIC_ID      0x020
#define LAPIC_SVR     0x0f0
#define LAPIC_ICR_LO  0x300
#define LAPIC_ICR_HI  0x310
#define ICR_BUSY      (1u << 12)
#define ICR_INIT      0x4500u
#define ICR_SIPI      (0x4600u | (TRAMP_ADDR >> 12))

#define MAX_CPUS      256

extern const char ap_trampoline_start[], ap_trampoline_end[];

static void lapic_wr(uint32_t reg, uint32_t v) { mmio_wr32(LAPIC_BASE + reg, v); }
static uint32_t lapic_rd(uint32_t reg) { return mmio_rd32(LAPIC_BASE + reg); }

static void send_ipi(uint32_t apic_id, uint32_t icr)
{
	lapic_wr(LAPIC_ICR_HI, apic_id << 24);
	lapic_wr(LAPIC_ICR_LO, icr);
	for (int i = 0; i < 10000 && (lapic_rd(LAPIC_ICR_LO) & ICR_BUSY); i++)
		;
}

static uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return lo | (uint64_t)hi << 32;
}

static uint32_t ap_count(void)
{
	return *(volatile uint32_t *)SMP_COUNT;
}

static void print_lock(void)
{
	uint8_t v;
	/* Bounded: an AP holds it only for one short line. */
	for (int i = 0; i < 200000; i++) {
		v = 1;
		__asm__ volatile("xchgb %0, %1" : "+q"(v), "+m"(*(volatile uint8_t *)SMP_LOCK) : : "memory");
		if (v == 0)
			return;
	}
}

static void print_unlock(void)
{
	__asm__ volatile("" : : : "memory");
	*(volatile uint8_t *)SMP_LOCK = 0;
}

void probe_smp(const struct bootinfo *bi)
{
	static uint32_t ids[MAX_CPUS];
	struct acpi a;
	int ncpus = 0, others = 0;

	acpi_locate(bi, &a);
	if (a.madt)
		ncpus = madt_lapic_ids(a.madt, ids, MAX_CPUS);

	if (ncpus > 1) {
		/* Install the trampoline and reset the shared lock/counter. */
		size_t n = (size_t)(ap_trampoline_end - ap_trampoline_start);
		volatile uint8_t *dst = (volatile uint8_t *)TRAMP_ADDR;
		for (size_t i = 0; i < n; i++)
			dst[i] = (uint8_t)ap_trampoline_start[i];
		*(volatile uint32_t *)SMP_LOCK = 0;
		*(volatile uint32_t *)SMP_COUNT = 0;

		uint32_t self = lapic_rd(LAPIC_ID) >> 24;
		lapic_wr(LAPIC_SVR, lapic_rd(LAPIC_SVR) | 0x100);   /* APIC software enable */

		int m = ncpus < MAX_CPUS ? ncpus : MAX_CPUS;
		for (int i = 0; i < m; i++)
			if (ids[i] != self && ids[i] < 0xff) {
				send_ipi(ids[i], ICR_INIT);
				others++;
			}
		spin(5000);
		for (int pass = 0; pass < 2; pass++) {
			for (int i = 0; i < m; i++)
				if (ids[i] != self && ids[i] < 0xff)
					send_ipi(ids[i], ICR_SIPI);
			spin(2000);
		}
		/* Wait for the APs, at most ~2 s: bounded by the TSC rather
		 * than by iterations, since the guest runs at ~1M instr/s
		 * under kvm_pvm but ~1000x faster under TCG or real KVM.
		 * (4e9 cycles is 1-2 s on current hosts.) */
		uint64_t t0 = rdtsc();
		for (uint32_t i = 0; ap_count() < (uint32_t)others; i++)
			if ((i & 63) == 0 && rdtsc() - t0 > 4000000000ull)
				break;
	}

	print_lock();
	put_str("SMP cpus=");
	put_dec(ncpus);
	put_str(" up=");
	put_dec(1 + (others ? ap_count() : 0));
	put_nl();
	print_unlock();
}
