/* hostile_vsock.c — `probe=hostile` against virtio-vsock: a flood of connection requests
 * (to a host port that accepts and reads slowly, and to one nobody listens on), data past
 * the credit the device gave, packets with absurd lengths, short or misplaced descriptors,
 * wrong CIDs, types and ops; then `hostile_vsock_final`, one well-behaved connection that
 * sends a line to the host. */
#include "hostile.h"

#define VS_FEATURES (1ull << 32)
#define RX_N     128
#define RX_BUF   4096
#define TX_SIZE  256
#define HDR_LEN  44
#define TYPE_STREAM 1
enum { OP_REQUEST = 1, OP_RESPONSE, OP_RST, OP_SHUTDOWN, OP_RW, OP_CREDIT_UPDATE, OP_CREDIT_REQUEST };

#define FLOOD_PORT0 10000
#define FLOOD_N     300
#define NONE_PORT0  20000
#define NONE_N      100
#define FINAL_PORT  40000

static struct vq qs[3];        /* rx, tx, event */
static uint64_t guest_cid;
static uint16_t tx_slot;       /* next descriptor pair */
static uint8_t connected[FLOOD_N];
static int final_connected;
static uint32_t n_response, n_rst, n_other;

/* Takes what the device put in RX buffers and gives the buffers back. */
static void rx_drain(uint64_t base)
{
	struct vq *rx = &qs[0];
	int reposted = 0;
	while (rx->used_seen != vq_used_idx(rx)) {
		uint32_t id = vq_used_id(rx, rx->used_seen) % RX_N;
		uint64_t b = H_VS_RXBUF + (uint64_t)id * RX_BUF;
		uint16_t op = rd16(b + 30);
		uint32_t dport = rd32(b + 20);
		if (op == OP_RESPONSE) {
			n_response++;
			if (dport >= FLOOD_PORT0 && dport < FLOOD_PORT0 + FLOOD_N)
				connected[dport - FLOOD_PORT0] = 1;
			if (dport == FINAL_PORT)
				final_connected = 1;
		} else if (op == OP_RST) {
			n_rst++;
			if (dport >= FLOOD_PORT0 && dport < FLOOD_PORT0 + FLOOD_N)
				connected[dport - FLOOD_PORT0] = 0;
		} else {
			n_other++;
		}
		rx->used_seen++;
		vq_push(rx, (uint16_t)id);
		reposted = 1;
	}
	if (reposted)
		vw(base, R_QUEUE_NOTIFY, 0);
}

/* Drains RX for about `ms` milliseconds, or until `*until` (if given) is non-zero. */
static void rx_wait(uint64_t base, uint32_t ms, const int *until)
{
	for (uint32_t i = 0; i < ms / 5 && !(until && *until); i++) {
		rx_drain(base);
		uint64_t end = tsc() + 5 * 2500000ull;
		while (tsc() < end)
			spin(100);
	}
	rx_drain(base);
}

static uint32_t vs_up(uint64_t base)
{
	vq_init(&qs[0], H_VS_RXQ, RX_N);
	vq_init(&qs[1], H_VS_TXQ, TX_SIZE);
	vq_init(&qs[2], H_VS_EVQ, 8);
	tx_slot = 0;
	dev_setup(base, VS_FEATURES, qs, 3);
	guest_cid = vr(base, R_CONFIG) | (uint64_t)vr(base, R_CONFIG + 4) << 32;
	for (uint16_t i = 0; i < RX_N; i++) {
		vq_desc(&qs[0], i, H_VS_RXBUF + (uint64_t)i * RX_BUF, RX_BUF, F_WRITE, 0);
		vq_push(&qs[0], i);
	}
	uint32_t s = dev_driver_ok(base);
	vw(base, R_QUEUE_NOTIFY, 0);
	return s;
}

struct pkt {
	uint64_t src_cid, dst_cid;
	uint32_t src_port, dst_port, len;
	uint16_t type, op;
	uint32_t flags, buf_alloc, fwd_cnt;
	/* the chain */
	uint32_t hdr_desc_len;         /* 0: HDR_LEN */
	uint16_t hdr_flags;            /* extra flags on the header descriptor */
	uint64_t data;                 /* 0: no data descriptor */
	uint32_t data_len;
};

static void pkt_init(struct pkt *p, uint32_t src_port, uint32_t dst_port, uint16_t op)
{
	p->src_cid = guest_cid;
	p->dst_cid = 2;
	p->src_port = src_port;
	p->dst_port = dst_port;
	p->len = 0;
	p->type = TYPE_STREAM;
	p->op = op;
	p->flags = 0;
	p->buf_alloc = 0;
	p->fwd_cnt = 0;
	p->hdr_desc_len = 0;
	p->hdr_flags = 0;
	p->data = 0;
	p->data_len = 0;
}

/* Queues one packet (without notifying); waits for TX room first. Returns 0 if the device
 * did not make room within 2 s. */
static int tx(uint64_t base, const struct pkt *p)
{
	struct vq *t = &qs[1];
	for (int i = 0; (uint16_t)(t->avail_idx - vq_used_idx(t)) >= TX_SIZE / 2; i++) {
		if (i == 400)
			return 0;
		vw(base, R_QUEUE_NOTIFY, 1);
		rx_wait(base, 5, NULL);
	}
	uint16_t d = tx_slot;
	tx_slot = (uint16_t)((tx_slot + 2) % TX_SIZE);
	uint64_t h = H_VS_TXHDR + (uint64_t)d * 32;
	*(volatile uint64_t *)h = p->src_cid;
	*(volatile uint64_t *)(h + 8) = p->dst_cid;
	*(volatile uint32_t *)(h + 16) = p->src_port;
	*(volatile uint32_t *)(h + 20) = p->dst_port;
	*(volatile uint32_t *)(h + 24) = p->len;
	*(volatile uint16_t *)(h + 28) = p->type;
	*(volatile uint16_t *)(h + 30) = p->op;
	*(volatile uint32_t *)(h + 32) = p->flags;
	*(volatile uint32_t *)(h + 36) = p->buf_alloc;
	*(volatile uint32_t *)(h + 40) = p->fwd_cnt;
	uint16_t more = p->data ? F_NEXT : 0;
	vq_desc(t, d, h, p->hdr_desc_len ? p->hdr_desc_len : HDR_LEN, (uint16_t)(p->hdr_flags | more),
		(uint16_t)(d + 1));
	if (p->data)
		vq_desc(t, (uint16_t)(d + 1), p->data, p->data_len, 0, 0);
	vq_push(t, d);
	return 1;
}

/* Notifies TX and waits (draining RX) until the device has taken every TX packet. */
static int tx_flush(uint64_t base, uint32_t ms)
{
	struct vq *t = &qs[1];
	vw(base, R_QUEUE_NOTIFY, 1);
	for (uint32_t i = 0; i < ms / 5 && vq_used_idx(t) != t->avail_idx; i++)
		rx_wait(base, 5, NULL);
	return vq_used_idx(t) == t->avail_idx;
}

static void conn_flood(uint64_t base)
{
	struct pkt p;
	uint32_t sent = 0;
	n_response = n_rst = n_other = 0;
	for (uint32_t i = 0; i < FLOOD_N + NONE_N; i++) {
		if (i < FLOOD_N)
			pkt_init(&p, FLOOD_PORT0 + i, VS_PORT_SLOW, OP_REQUEST);
		else
			pkt_init(&p, NONE_PORT0 + i, VS_PORT_NONE, OP_REQUEST);
		sent += (uint32_t)tx(base, &p);
		if (i % 32 == 31)
			vw(base, R_QUEUE_NOTIFY, 1);
	}
	int taken = tx_flush(base, 3000);
	for (int i = 0; i < 600 && n_response + n_rst < sent; i++)
		rx_wait(base, 5, NULL);
	hostile_line("vsock flood", "requests", sent, "responses", n_response, "rsts", n_rst);
	hostile_line("vsock flood-taken", "all", (uint64_t)taken, "other", n_other, NULL, 0);
}

/* Four connections each send 384 KiB without waiting for credit (the device gives at most
 * 256 KiB); the host reads slowly. */
static void credit(uint64_t base)
{
	struct pkt p;
	uint32_t conns = 0, bytes = 0, rst_before = n_rst;
	for (uint32_t c = 0; c < FLOOD_N && conns < 4; c++) {
		if (!connected[c])
			continue;
		conns++;
		for (int k = 0; k < 12; k++) {
			pkt_init(&p, FLOOD_PORT0 + c, VS_PORT_SLOW, OP_RW);
			p.len = 32768;
			p.data = H_VS_TXDATA;
			p.data_len = 32768;
			if (!tx(base, &p))
				break;
			bytes += 32768;
		}
	}
	tx_flush(base, 3000);
	rx_wait(base, 300, NULL);
	hostile_line("vsock credit", "conns", conns, "bytes", bytes, "rsts", n_rst - rst_before);
}

/* Packets the device must drop or answer with RST. */
static void absurd(uint64_t base, uint64_t ram_end)
{
	struct pkt p;
	uint32_t sent = 0, c = 0;
	while (c < FLOOD_N && !connected[c])
		c++;
	uint32_t sport = FLOOD_PORT0 + (c < FLOOD_N ? c : 0);
	for (int round = 0; round < 20; round++) {
		for (int k = 0; k < 14; k++) {
			pkt_init(&p, sport, VS_PORT_SLOW, OP_RW);
			p.data = H_VS_TXDATA;
			p.data_len = 4096;
			switch (k) {
			case 0: p.len = 0xffffffffu; break;
			case 1: p.len = 65537; p.data_len = 65537; break;
			case 2: p.len = 100; p.data = 0; break;                 /* no data descriptor */
			case 3: p.len = 4096; p.data_len = 100; break;          /* data shorter than len */
			case 4: p.hdr_desc_len = 20; break;                     /* short header */
			case 5: p.hdr_flags = F_WRITE; p.len = 16; break;       /* writable header */
			case 6: p.len = 4096; p.data = 0xd0100000ull; break;    /* data in the MMIO hole */
			case 7: p.len = 4096; p.data = ram_end - 1024; break;   /* straddles the end of RAM */
			case 8: p.src_cid = 99; p.len = 16; break;
			case 9: p.dst_cid = 7; p.op = OP_REQUEST; p.data = 0; break;
			case 10: p.type = 2; p.op = OP_REQUEST; p.src_port = 30000 + (uint32_t)round; p.data = 0; break;
			case 11: p.op = 99; p.data = 0; break;
			case 12: p.src_port = 31000 + (uint32_t)round; p.len = 16; break; /* unknown connection */
			default: p.op = OP_CREDIT_REQUEST; p.data = 0; break;
			}
			sent += (uint32_t)tx(base, &p);
		}
		vw(base, R_QUEUE_NOTIFY, 1);
	}
	int taken = tx_flush(base, 3000);
	rx_wait(base, 200, NULL);
	hostile_line("vsock absurd", "sent", sent, "taken", (uint64_t)taken, "dev", vr(base, R_STATUS));
}

void hostile_vsock(uint64_t base, uint64_t ram_end)
{
	uint32_t s = vs_up(base);
	hostile_line("vsock up", "cid", guest_cid, "dev", s, NULL, 0);
	conn_flood(base);
	credit(base);
	absurd(base, ram_end);
	dev_reset(base);
}

int hostile_vsock_final(uint64_t base)
{
	static const char line[] = "HOSTILE VSOCK HELLO\n";
	struct pkt p;
	int ok = (vs_up(base) & S_DRIVER_OK) != 0;

	final_connected = 0;
	pkt_init(&p, FINAL_PORT, VS_PORT_FINAL, OP_REQUEST);
	p.buf_alloc = 65536;
	tx(base, &p);
	vw(base, R_QUEUE_NOTIFY, 1);
	rx_wait(base, 3000, &final_connected);
	ok &= final_connected;
	for (uint32_t i = 0; i < sizeof(line) - 1; i++)
		*(volatile uint8_t *)(H_VS_TXDATA + i) = (uint8_t)line[i];
	pkt_init(&p, FINAL_PORT, VS_PORT_FINAL, OP_RW);
	p.buf_alloc = 65536;
	p.len = sizeof(line) - 1;
	p.data = H_VS_TXDATA;
	p.data_len = p.len;
	tx(base, &p);
	pkt_init(&p, FINAL_PORT, VS_PORT_FINAL, OP_SHUTDOWN);
	p.flags = 3;
	p.buf_alloc = 65536;
	tx(base, &p);
	ok &= tx_flush(base, 2000);
	rx_wait(base, 200, NULL);
	hostile_line("vsock final", "ok", (uint64_t)ok, "dev", vr(base, R_STATUS), NULL, 0);
	return ok;
}
