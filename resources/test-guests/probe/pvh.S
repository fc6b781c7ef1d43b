/* pvh.S — PVH entry of the probe guest (probe-pvh.elf only).
 * Emits the Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY (type 18) pointing at
 * pvh_start32. The loader enters it in 32-bit protected mode, paging off,
 * flat CS/DS, with %ebx = physical address of struct hvm_start_info. We
 * switch to long mode (lm32_enter) and call probe_main(start_info, pvh). */
#define ENTRY_PVH 1

	.section .note.Xen, "a", @note
	.balign 4
	.long 4, 8, 18			/* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.quad pvh_start32
	.balign 4

	.section .text32, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	cli
	cld
	mov	$pvh_start64, %ebp
	jmp	lm32_enter

	.text
	.code64
pvh_start64:
	mov	%ebx, %edi		/* start_info (zero-extended by lm32_enter) */
	mov	$ENTRY_PVH, %esi
	jmp	probe_common64

	.section .note.GNU-stack, "", @progbits
