/* entry64.S — 64-bit entry points of the probe guest.
 *
 * Built twice:
 *  - plain (ELF64 build): `_start` is the ELF e_entry. The VMM enters it in
 *    64-bit long mode (4 GiB identity map, interrupts off) with %rsi = the
 *    zero page (struct boot_params).
 *  - with -DBZIMAGE (protected-mode part of probe.bzimage, loaded at
 *    0x100000): offset 0x000 holds `startup_32`, the 32-bit boot protocol
 *    entry (%esi = zero page; it builds its own page tables via lm32_enter and
 *    continues at startup_64), and offset 0x200 holds `startup_64`, the 64-bit
 *    entry (Linux's convention) with the same register ABI as `_start`.
 *
 * Both end in probe_common64 (also used by pvh.S): switch to our own stack,
 * clear .bss and call probe_main(info, entry_kind).
 */
#define ENTRY_ELF64   0
#define ENTRY_PVH     1
#define ENTRY_BZIMAGE 2

#ifdef BZIMAGE
	.section .text32.entry, "ax"		/* placed first by probe.ld */
	.code32
	.globl startup_32
startup_32:				/* 0x100000 */
	cli
	cld
	mov	%esi, %ebx		/* lm32_enter preserves %ebx */
	mov	$startup_64_from32, %ebp
	jmp	lm32_enter

	.text
	.code64
startup_64_from32:
	mov	%ebx, %esi		/* zero-extends */
	jmp	startup_64

	.section .text.entry, "ax"		/* probe.ld: at 0x100200 */
	.globl startup_64, _start
startup_64:				/* 0x100200 */
_start:
	mov	%rsi, %rdi
	mov	$ENTRY_BZIMAGE, %esi
	jmp	probe_common64
#else
	.section .text.entry, "ax"		/* probe.ld: at 0x100000 */
	.code64
	.globl _start
_start:					/* 0x100000 */
	mov	%rsi, %rdi
	mov	$ENTRY_ELF64, %esi
	jmp	probe_common64
#endif

	.text
	.code64
/* %rdi = boot info address, %esi = entry kind */
	.globl probe_common64
probe_common64:
	cli
	cld
	mov	$__stack_top, %esp	/* < 2 GiB: zero-extended into %rsp */
	mov	%rdi, %r12
	mov	%esi, %r13d
	mov	$__bss_start, %edi
	mov	$__bss_end, %ecx
	sub	%edi, %ecx
	shr	$3, %ecx
	xor	%eax, %eax
	rep stosq
	mov	%r12, %rdi
	mov	%r13d, %esi
	xor	%ebp, %ebp
	call	probe_main
1:	cli
	hlt
	jmp	1b

	.section .note.GNU-stack, "", @progbits
