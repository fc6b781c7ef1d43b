/* acpi.c — ACPI table discovery and checks for the probe guest
 * (`probe=acpi`): RSDP, XSDT/RSDT, every listed table, DSDT, MADT and FADT. */
#include "probe.h"

#define FOUR_GB (1ull << 32)

static int sig_is(uint64_t t, const char *sig)
{
	return rd32(t) == rd32((uint64_t)sig);
}

static uint8_t csum(uint64_t p, uint64_t n)
{
	uint8_t s = 0;
	while (n--)
		s += rd8(p++);
	return s;
}

static int rsdp_valid_sig(uint64_t p)
{
	return rd64(p) == rd64((uint64_t)"RSD PTR ");
}

/* A table is usable if its header lies in the identity map and its length
 * is sane (at least a header, at most 1 MiB, inside 4 GiB). */
static int table_ok(uint64_t t)
{
	if (t == 0 || t + 36 > FOUR_GB)
		return 0;
	uint32_t len = rd32(t + 4);
	return len >= 36 && len <= (1u << 20) && t + len <= FOUR_GB;
}

uint32_t acpi_len(uint64_t t)
{
	return rd32(t + 4);
}

struct gas acpi_gas(uint64_t t, uint32_t off)
{
	struct gas g = { 0, 0, 0, 0, 0 };
	if (t && acpi_len(t) >= off + 12) {
		g.space = rd8(t + off);
		g.width = rd8(t + off + 1);
		g.offset = rd8(t + off + 2);
		g.access = rd8(t + off + 3);
		g.addr = rd64(t + off + 4);
	}
	return g;
}

static uint64_t find_rsdp(const struct bootinfo *bi)
{
	if (bi->rsdp)
		return bi->rsdp;
	for (uint64_t p = 0xe0000; p < 0x100000; p += 16)
		if (rsdp_valid_sig(p))
			return p;
	return 0;
}

/* Root table (XSDT if rev >= 2 and present, else RSDT) and its entry size. */
static uint64_t root_table(uint64_t rsdp, int *entsz)
{
	uint8_t rev = rd8(rsdp + 15);
	uint64_t xsdt = rev >= 2 ? rd64(rsdp + 24) : 0;
	if (xsdt && table_ok(xsdt)) {
		*entsz = 8;
		return xsdt;
	}
	*entsz = 4;
	uint64_t rsdt = rd32(rsdp + 16);
	return table_ok(rsdt) ? rsdt : 0;
}

static uint64_t root_entry(uint64_t root, int entsz, uint32_t i)
{
	uint64_t e = root + 36 + (uint64_t)i * entsz;
	return entsz == 8 ? rd64(e) : rd32(e);
}

static uint32_t root_count(uint64_t root, int entsz)
{
	return root ? (acpi_len(root) - 36) / entsz : 0;
}

static uint64_t fadt_dsdt(uint64_t fadt)
{
	uint64_t d = 0;
	if (acpi_len(fadt) >= 148)
		d = rd64(fadt + 140);
	if (!d && acpi_len(fadt) >= 44)
		d = rd32(fadt + 40);
	return d;
}

void acpi_locate(const struct bootinfo *bi, struct acpi *a)
{
	int entsz;

	a->rsdp = find_rsdp(bi);
	a->fadt = a->madt = a->dsdt = 0;
	if (!a->rsdp || a->rsdp + 36 > FOUR_GB)
		return;
	uint64_t root = root_table(a->rsdp, &entsz);
	for (uint32_t i = 0, n = root_count(root, entsz); i < n; i++) {
		uint64_t t = root_entry(root, entsz, i);
		if (!table_ok(t))
			continue;
		if (!a->fadt && sig_is(t, "FACP"))
			a->fadt = t;
		else if (!a->madt && sig_is(t, "APIC"))
			a->madt = t;
	}
	if (a->fadt) {
		uint64_t d = fadt_dsdt(a->fadt);
		a->dsdt = table_ok(d) ? d : 0;
	}
}

static void print_table(uint64_t t)
{
	put_str("ACPI ");
	put_strn((const char *)t, 4);
	put_str(" addr=");
	put_hex(t);
	put_str(" len=");
	put_dec(acpi_len(t));
	put_str(csum(t, acpi_len(t)) == 0 ? " csum=ok\n" : " csum=bad\n");
}

static void print_bad_table(uint64_t t)
{
	put_str("ACPI ???? addr=");
	put_hex(t);
	put_str(" unreadable\n");
}

/* MADT entries: calls back per enabled local APIC (type 0 and type 9). */
int madt_lapic_ids(uint64_t madt, uint32_t *ids, int max)
{
	int n = 0;
	uint64_t end = madt + acpi_len(madt);

	for (uint64_t e = madt + 44; e + 2 <= end;) {
		uint8_t type = rd8(e), len = rd8(e + 1);
		if (len < 2 || e + len > end)
			break;
		if (type == 0 && len >= 8 && (rd32(e + 4) & 1)) {
			if (n < max)
				ids[n] = rd8(e + 3);
			n++;
		} else if (type == 9 && len >= 16 && (rd32(e + 8) & 1)) {
			if (n < max)
				ids[n] = rd32(e + 4);
			n++;
		}
		e += len;
	}
	return n;
}

static void print_madt(uint64_t madt)
{
	uint64_t end = madt + acpi_len(madt);
	int ioapics = 0;

	for (uint64_t e = madt + 44; e + 2 <= end;) {
		uint8_t len = rd8(e + 1);
		if (len < 2 || e + len > end)
			break;
		if (rd8(e) == 1 && len >= 12)
			ioapics++;
		e += len;
	}
	put_str("MADT lapics=");
	put_dec(madt_lapic_ids(madt, 0, 0));
	put_str(" ioapics=");
	put_dec(ioapics);
	put_str(" lapic_addr=");
	put_hex(rd32(madt + 36));
	put_nl();

	for (uint64_t e = madt + 44; e + 2 <= end;) {
		uint8_t len = rd8(e + 1);
		if (len < 2 || e + len > end)
			break;
		if (rd8(e) == 1 && len >= 12) {
			put_str("MADT ioapic id=");
			put_dec(rd8(e + 2));
			put_str(" addr=");
			put_hex(rd32(e + 4));
			put_str(" gsi=");
			put_dec(rd32(e + 8));
			put_nl();
		}
		e += len;
	}
}

static void put_gas(struct gas g)
{
	put_dec(g.space);
	serial_putc(':');
	put_hex(g.addr);
}

static void print_fadt(uint64_t f)
{
	uint32_t len = acpi_len(f);
	struct gas none = { 0, 0, 0, 0, 0 };

	put_str("FADT flags=");
	put_hex(len >= 116 ? rd32(f + 112) : 0);
	put_str(" sleep_ctl=");
	put_gas(len >= 268 ? acpi_gas(f, 244) : none);
	put_str(" sleep_sts=");
	put_gas(len >= 268 ? acpi_gas(f, 256) : none);
	put_str(" reset=");
	put_gas(acpi_gas(f, 116));
	serial_putc(':');
	put_hex(len >= 129 ? rd8(f + 128) : 0);
	put_str(" iapc=");
	put_hex(len >= 111 ? rd16(f + 109) : 0);
	put_nl();
}

static int contains(uint64_t p, uint32_t n, const char *pat, uint32_t plen)
{
	uint8_t first = (uint8_t)pat[0];

	for (uint32_t i = 0; i + plen <= n; i++) {
		if (rd8(p + i) != first)
			continue;
		uint32_t j = 1;
		while (j < plen && rd8(p + i + j) == (uint8_t)pat[j])
			j++;
		if (j == plen)
			return 1;
	}
	return 0;
}

static void print_dsdt_names(uint64_t d)
{
	static const char *const names[] = { "_S5_", "PNP0501", "QEMU0001", "ACPI0007", "LNRO0005" };
	static const char pnp0501_eisa[] = { 0x41, (char)0xd0, 0x05, 0x01 };
	uint32_t len = acpi_len(d);

	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		uint32_t plen = 0;
		while (names[i][plen])
			plen++;
		int found = contains(d, len, names[i], plen);
		if (!found && i == 1)
			found = contains(d, len, pnp0501_eisa, 4);
		if (found) {
			put_str("DSDT has ");
			put_str(names[i]);
			put_nl();
		}
	}
}

void probe_acpi(const struct bootinfo *bi)
{
	struct acpi a;
	int entsz;

	acpi_locate(bi, &a);
	if (!a.rsdp || a.rsdp + 36 > FOUR_GB) {
		put_str("ACPI RSDP none\nACPI DONE\n");
		return;
	}

	uint8_t rev = rd8(a.rsdp + 15);
	int ok = csum(a.rsdp, 20) == 0 && (rev < 2 || csum(a.rsdp, 36) == 0);
	put_str("ACPI RSDP addr=");
	put_hex(a.rsdp);
	put_str(" rev=");
	put_dec(rev);
	put_str(ok ? " csum=ok" : " csum=bad");
	put_str(" xsdt=");
	put_hex(rev >= 2 ? rd64(a.rsdp + 24) : 0);
	put_nl();

	uint64_t root = root_table(a.rsdp, &entsz);
	if (root) {
		print_table(root);
		for (uint32_t i = 0, n = root_count(root, entsz); i < n; i++) {
			uint64_t t = root_entry(root, entsz, i);
			if (table_ok(t))
				print_table(t);
			else
				print_bad_table(t);
		}
	}
	if (a.dsdt)
		print_table(a.dsdt);
	if (a.madt)
		print_madt(a.madt);
	if (a.fadt)
		print_fadt(a.fadt);
	if (a.dsdt)
		print_dsdt_names(a.dsdt);
	put_str("ACPI DONE\n");
}
