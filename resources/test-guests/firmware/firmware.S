/* firmware.S — firmware.bin, a 64 KiB raw real-mode "BIOS" for testing the
 * VMM's firmware mapping (image at 0xffff0000..0xffffffff, copy at
 * 0xf0000..0xfffff) and reset-vector start (CS=0xf000 with base 0xffff0000,
 * IP=0xfff0).
 *  1. reset vector (offset 0xfff0): near jmp to fw_start
 *  2. print "FIRMWARE-UP\n" on COM1, reading the string through CS, i.e. from
 *     the high mapping (CS base is still 0xffff0000)
 *  3. ljmp $0xf000, $fw_low: from now on CS base is 0xf0000 (the low copy)
 *  4. DS := 0xf000, print "FIRMWARE-LOW ok\n" from the low copy
 *  5. power off: outb 0x34 -> port 0x600, then cli; hlt forever
 * Uses no stack and no RAM. Offsets in this file equal IP values.
 */
	.code16
	.section .fw, "ax"

/* Print the NUL-terminated string at SEG:msg on COM1 (polling LSR bit 5,
 * bounded). Clobbers ax, cx, dx, si. */
.macro PRINT seg, msg
	mov	$\msg, %si
1:	\seg lodsb
	test	%al, %al
	jz	3f
	mov	%al, %ah
	mov	$0x3fd, %dx
	mov	$10000, %cx
2:	in	%dx, %al
	test	$0x20, %al
	loopz	2b
	mov	$0x3f8, %dx
	mov	%ah, %al
	out	%al, %dx
	jmp	1b
3:
.endm

fw_start:
	cli
	cld
	PRINT	cs, msg_up
	ljmp	$0xf000, $fw_low

fw_low:
	mov	$0xf000, %ax
	mov	%ax, %ds
	PRINT	ds, msg_low
	mov	$0x34, %al
	mov	$0x600, %dx
	out	%al, %dx
4:	cli
	hlt
	jmp	4b

msg_up:
	.asciz	"FIRMWARE-UP\n"
msg_low:
	.asciz	"FIRMWARE-LOW ok\n"

	.org	0xfff0
reset_vector:
	jmp	fw_start
	.org	0x10000, 0			/* exactly 64 KiB */

	.section .note.GNU-stack, "", @progbits
