/* ap_trampoline.S — 16-bit real-mode code run by application processors
 * during `probe=smp`. smp.c copies [ap_trampoline_start, ap_trampoline_end)
 * to physical 0x40000 and sends SIPI vector 0x40, so the AP starts here with
 * CS=0x4000, IP=0. It reads its APIC id (CPUID.1:EBX[31:24]), takes the
 * print spinlock (byte at 0x3f000), prints "CPU <id> up\n" on COM1, releases
 * the lock, atomically increments the counter at 0x3f004 and halts forever.
 * Position independent within its segment: all data references are
 * relative to ap_trampoline_start. */

#define SEG_SHARED 0x3f00   /* 0x3f000: +0 lock byte, +4 u32 counter */
#define REL(x) ((x) - ap_trampoline_start)

	.section .rodata.ap_trampoline, "a"
	.code16
	.globl ap_trampoline_start, ap_trampoline_end
ap_trampoline_start:
	cli
	cld
	mov	%cs, %ax
	mov	%ax, %ds
	mov	$SEG_SHARED, %ax
	mov	%ax, %es

	mov	$1, %eax
	cpuid
	shr	$24, %ebx		/* bl = initial APIC id */

	/* Acquire the print lock (xchg with memory is implicitly locked). */
1:	mov	$1, %al
	xchg	%al, %es:0
	test	%al, %al
	jnz	1b

	/* Only the lock holder uses the stack: top of the trampoline page. */
	mov	%cs, %ax
	mov	%ax, %ss
	mov	$0x1000, %sp

	mov	$REL(msg_cpu), %si
	call	puts16
	/* decimal APIC id */
	movzbw	%bl, %ax
	xor	%cx, %cx
	mov	$10, %di
2:	xor	%dx, %dx
	div	%di
	push	%dx
	inc	%cx
	test	%ax, %ax
	jnz	2b
3:	pop	%ax
	add	$'0', %al
	call	putc16
	loop	3b
	mov	$REL(msg_up), %si
	call	puts16

	movb	$0, %es:0		/* release the lock */
	lock incl %es:4			/* count ourselves in */
4:	cli
	hlt
	jmp	4b

/* puts16: print NUL-terminated ds:si. Clobbers ax, si, dx. */
puts16:
	lodsb
	test	%al, %al
	jz	5f
	call	putc16
	jmp	puts16
5:	ret

/* putc16: wait (bounded) for THR empty, then send al to COM1. */
putc16:
	push	%cx
	mov	%al, %ah
	mov	$0x3fd, %dx
	mov	$10000, %cx
6:	in	%dx, %al
	test	$0x20, %al
	loopz	6b
	mov	$0x3f8, %dx
	mov	%ah, %al
	out	%al, %dx
	pop	%cx
	ret

msg_cpu:
	.asciz	"CPU "
msg_up:
	.asciz	" up\n"
ap_trampoline_end:
