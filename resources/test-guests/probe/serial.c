/* serial.c — polled COM1 (16550 at I/O port 0x3f8) output/input and number
 * formatting for the probe guest. Hex is "0x" + lowercase digits with no
 * leading zeros ("0x0" for zero); decimal is plain. */
#include "probe.h"

#define COM1     0x3f8
#define COM1_LSR (COM1 + 5)
#define LSR_DR   0x01   /* data ready */
#define LSR_THRE 0x20   /* transmit holding register empty */

void serial_putc(char c)
{
	/* Bounded wait, so a missing/odd UART can't hang the probe forever. */
	for (int i = 0; i < 100000; i++)
		if (inb(COM1_LSR) & LSR_THRE)
			break;
	outb(COM1, (uint8_t)c);
}

/* COM2 (0x2f8): the log port, ttyS1. */
void log_put_str(const char *s)
{
	for (; *s; s++) {
		for (int i = 0; i < 100000; i++)
			if (inb(0x2f8 + 5) & LSR_THRE)
				break;
		outb(0x2f8, (uint8_t)*s);
	}
}

void put_str(const char *s)
{
	while (*s)
		serial_putc(*s++);
}

void put_strn(const char *s, size_t n)
{
	while (n--)
		serial_putc(*s++);
}

void put_nl(void)
{
	serial_putc('\n');
}

void put_hex(uint64_t v)
{
	char buf[16];
	int n = 0;

	do {
		buf[n++] = "0123456789abcdef"[v & 0xf];
		v >>= 4;
	} while (v);
	serial_putc('0');
	serial_putc('x');
	while (n)
		serial_putc(buf[--n]);
}

void put_dec(uint64_t v)
{
	char buf[20];
	int n = 0;

	do {
		buf[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		serial_putc(buf[--n]);
}

int serial_getc(void)
{
	while (!(inb(COM1_LSR) & LSR_DR))
		;
	return inb(COM1);
}
