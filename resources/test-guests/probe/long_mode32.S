/* long_mode32.S — lm32_enter: switches from 32-bit protected mode (paging
 * off, flat segments; the PVH and 32-bit Linux boot entries) to 64-bit long
 * mode. Builds an identity map of the first 4 GiB with 2 MiB pages in its own
 * page-aligned memory, loads its own GDT (0x08 = 64-bit code, 0x10 = data),
 * enables CR4.PAE, EFER.LME and CR0.PG, far-jumps to 64-bit code and then
 * jumps to the 64-bit address in %ebp. Uses no stack. Preserves %ebx, %esi
 * and %ebp; clobbers %eax, %ecx, %edx, %edi. */

	.section .pgtables, "aw", @nobits
	.balign 4096
pml4:	.skip 4096
pdpt:	.skip 4096
pd:	.skip 4 * 4096			/* 4 x 512 x 2 MiB = 4 GiB */

	.section .rodata
	.balign 8
lm_gdt:
	.quad 0				/* null */
	.quad 0x00af9a000000ffff	/* 0x08: 64-bit code, DPL 0 */
	.quad 0x00cf92000000ffff	/* 0x10: flat data */
lm_gdt_end:
	.balign 4
	.word 0				/* align the base field */
lm_gdt_desc:
	.word lm_gdt_end - lm_gdt - 1
	.long lm_gdt

	.section .text32, "ax"
	.code32
	.globl lm32_enter
lm32_enter:
	cli
	cld
	/* Clear PML4 and PDPT (the PD entries are all written below). */
	mov	$pml4, %edi
	xor	%eax, %eax
	mov	$2048, %ecx
	rep stosl
	movl	$(pdpt + 0x003), pml4		/* present | writable */
	movl	$(pd + 0x0003), pdpt
	movl	$(pd + 0x1003), pdpt + 8
	movl	$(pd + 0x2003), pdpt + 16
	movl	$(pd + 0x3003), pdpt + 24
	mov	$pd, %edi
	mov	$0x83, %eax			/* present | writable | 2 MiB */
	mov	$2048, %ecx
1:	mov	%eax, (%edi)
	movl	$0, 4(%edi)
	add	$0x200000, %eax
	add	$8, %edi
	dec	%ecx
	jnz	1b

	mov	%cr4, %eax
	or	$0x20, %eax			/* PAE */
	mov	%eax, %cr4
	mov	$pml4, %eax
	mov	%eax, %cr3
	mov	$0xc0000080, %ecx		/* EFER */
	rdmsr
	or	$0x100, %eax			/* LME */
	wrmsr
	lgdt	lm_gdt_desc
	mov	%cr0, %eax
	or	$0x80000001, %eax		/* PG | PE */
	mov	%eax, %cr0
	ljmp	$0x08, $lm64

	.text
	.code64
lm64:
	mov	$0x10, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	mov	%ebp, %ebp			/* upper halves are undefined after the switch */
	mov	%ebx, %ebx
	mov	%esi, %esi
	jmp	*%rbp

	.section .note.GNU-stack, "", @progbits
