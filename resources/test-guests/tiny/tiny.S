/* tiny.S — minimal PVH guest for measuring VMM fixed overhead (adapted from
 * shared/reference/tiny-guest). Entered in 32-bit protected mode, paging off
 * (PVH boot ABI, via the XEN_ELFNOTE_PHYS32_ENTRY note). Prints
 * MARKER-TINY-UP to COM1 (0x3f8, no LSR polling) and then, by ACTION:
 *   ACTION_IDLE     tiny-idle.elf     cli; hlt forever
 *   ACTION_RESET    tiny-reset.elf    i8042 reset: outb 0xfe -> port 0x64
 *   ACTION_OFF      tiny-off.elf      ACPI shutdown device: outb 0x34 -> port 0x600
 *   ACTION_GEDOFF   tiny-gedoff.elf   QEMU microvm GED sleep control (0xfea00200) := 0x34
 *   ACTION_GEDRESET tiny-gedreset.elf QEMU microvm GED reset register (0xfea00202) := 0x42
 * Then cli; hlt forever. (The reference's int3 triple-fault variant is left
 * out: int3 is not emulated by this machine's kvm_pvm.)
 */
#define ACTION_IDLE     0
#define ACTION_RESET    1
#define ACTION_OFF      2
#define ACTION_GEDOFF   3
#define ACTION_GEDRESET 4
#ifndef ACTION
#define ACTION ACTION_IDLE
#endif

	.section .note.Xen, "a", @note
	.balign 4
	.long 4, 8, 18			/* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.quad _start
	.balign 4

	.text
	.code32
	.globl _start
_start:
	cli
	cld
	mov	$msg, %esi
	mov	$0x3f8, %dx
1:	lodsb
	test	%al, %al
	jz	2f
	out	%al, %dx
	jmp	1b
2:
#if ACTION == ACTION_RESET
	mov	$0xfe, %al
	out	%al, $0x64
#elif ACTION == ACTION_OFF
	mov	$0x34, %al
	mov	$0x600, %dx
	out	%al, %dx
#elif ACTION == ACTION_GEDOFF
	movb	$0x34, 0xfea00200
#elif ACTION == ACTION_GEDRESET
	movb	$0x42, 0xfea00202
#endif
3:	cli
	hlt
	jmp	3b

msg:
	.asciz "MARKER-TINY-UP\n"

	.section .note.GNU-stack, "", @progbits
