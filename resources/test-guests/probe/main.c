/* main.c — entry point of the probe guest's C part: prints PROBE-UP, runs the
 * `probe=<name>` tokens of the command line in order, then the last
 * `exit=<action>` (default poweroff). Also implements `probe=echo` and
 * `probe=log` (a line to COM2, the log port), `probe=fail` (Android's failure string on
 * COM2), `probe=flood` (100 KB of output), `probe=tick` (a numbered line every ~10 ms,
 * forever, timed by the PIT) and `probe=hostile` (a malicious virtio driver, hostile*.c). */
#include "probe.h"
#include "hostile.h"

static const char *const entry_names[] = { "elf64", "pvh", "bzimage" };

static int token_is(const char *s, size_t n, const char *lit)
{
	size_t i = 0;
	for (; i < n; i++)
		if (lit[i] != s[i])
			return 0;
	return lit[i] == 0;
}

static int has_prefix(const char *s, size_t n, const char *pre, size_t plen)
{
	if (n < plen)
		return 0;
	for (size_t i = 0; i < plen; i++)
		if (s[i] != pre[i])
			return 0;
	return 1;
}

#define ECHO_MAX 200

static void probe_echo(void)
{
	char line[ECHO_MAX];
	int prev = 0;

	put_str("ECHO READY\n");
	for (;;) {
		size_t n = 0;
		int c;
		for (;;) {
			c = serial_getc();
			if (c == '\n' || c == '\r')
				break;
			if (n < ECHO_MAX)
				line[n++] = (char)c;
		}
		/* "\r\n" is one line end, not an extra empty line */
		int skip = n == 0 && c == '\n' && prev == '\r';
		prev = c;
		if (skip)
			continue;
		put_str("ECHO ");
		put_strn(line, n);
		put_nl();
		if (token_is(line, n, "quit"))
			return;
	}
}

/* PIT channel 0, counter latched and read (low byte, high byte). */
static uint16_t pit_read(void)
{
	outb(0x43, 0x00);
	uint8_t lo = inb(0x40);
	uint8_t hi = inb(0x40);
	return (uint16_t)(lo | (uint16_t)hi << 8);
}

/* "TICK <n>" each time the PIT's counter wraps: channel 0 in mode 2 (rate generator) with
 * 11932 counts of 1.193182 MHz is 10 ms. Interrupts stay off: the counter is polled. */
#define TICK_COUNTS 11932

static void probe_tick(void)
{
	outb(0x43, 0x34);
	outb(0x40, TICK_COUNTS & 0xff);
	outb(0x40, TICK_COUNTS >> 8);
	uint16_t prev = pit_read();
	for (uint64_t n = 0;;) {
		uint16_t now = pit_read();
		if (now > prev) {
			put_str("TICK ");
			put_dec(n++);
			put_nl();
		}
		prev = now;
	}
}

static void run_probe(const struct bootinfo *bi, const char *name, size_t n)
{
	if (token_is(name, n, "bootinfo"))
		probe_bootinfo(bi);
	else if (token_is(name, n, "acpi"))
		probe_acpi(bi);
	else if (token_is(name, n, "smp"))
		probe_smp(bi);
	else if (token_is(name, n, "echo"))
		probe_echo();
	else if (token_is(name, n, "tick"))
		probe_tick();
	else if (token_is(name, n, "hostile"))
		probe_hostile(bi);
	else if (token_is(name, n, "flood")) {
		/* 1000 lines of 100 bytes: 100 KB, more than a pipe holds. */
		for (int i = 0; i < 1000; i++) {
			put_str("FLOOD ");
			put_dec((uint64_t)i + 10000);
			put_str(" 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef12\n");
		}
		put_str("FLOOD DONE\n");
	} else if (token_is(name, n, "log")) {
		log_put_str("LOG hello from ttyS1\n");
		put_str("LOG sent\n");
	} else if (token_is(name, n, "fail")) {
		/* What the app guest's agent writes to ttyS1 before powering off on an error. */
		log_put_str("MICRODROID_INVALID_PAYLOAD_CONFIG");
		put_str("FAIL sent\n");
	} else {
		put_str("PROBE-ERROR unknown probe ");
		put_strn(name, n);
		put_nl();
	}
}

void probe_main(uint64_t info, int kind)
{
	struct bootinfo bi;
	const char *exit_act = "poweroff";
	size_t exit_len = 8;

	put_str("PROBE-UP entry=");
	put_str(entry_names[kind]);
	put_nl();

	bootinfo_parse(&bi, info, kind);

	for (const char *p = bi.cmdline; *p;) {
		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		const char *tok = p;
		while (*p && *p != ' ' && *p != '\t' && *p != '\n')
			p++;
		size_t n = (size_t)(p - tok);
		if (has_prefix(tok, n, "probe=", 6))
			run_probe(&bi, tok + 6, n - 6);
		else if (has_prefix(tok, n, "exit=", 5)) {
			exit_act = tok + 5;
			exit_len = n - 5;
		}
	}

	do_exit(&bi, exit_act, exit_len);
}
