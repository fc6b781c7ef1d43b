/* bzimage_setup.S — real-mode part ("setup", boot sector + SETUP_SECTS
 * sectors) of probe.bzimage, with the Linux boot-protocol 2.15 setup header
 * at 0x1f1. syssize and init_size come from the linked protected-mode part
 * (symbols _probe_syssize/_probe_init_size, see bzimage_setup.ld).
 *
 * micro-vmm never runs this code: it loads the protected-mode part at
 * 0x100000 and enters startup_64 (+0x200) directly. Loaders that use the
 * 16-bit entry (e.g. QEMU -kernel) start at 0x200 with CS = seg+0x20, IP = 0,
 * DS = ES = SS = seg. We then build a zero page at seg:0x1000 (header copy +
 * BIOS E820 map), enter 32-bit protected mode (CS 0x10, DS 0x18) and jump to
 * code32_start with %esi = zero page, as the Linux boot protocol specifies.
 */
#define SETUP_SECTS 2
#define ZP          0x1000			/* zero page, relative to seg */
#define HDR_START   0x1f1
#define HDR_END     0x26c			/* end of the 2.15 setup_header */
#define SMAP        0x534d4150

	.code16
	.section .setup, "ax"
	.globl setup_begin
setup_begin:
	.org	0x1f1
	.byte	SETUP_SECTS			/* 0x1f1 setup_sects */
	.word	0				/* 0x1f2 root_flags */
	.long	_probe_syssize			/* 0x1f4 syssize (16-byte units) */
	.word	0				/* 0x1f8 ram_size */
	.word	0xffff				/* 0x1fa vid_mode (normal) */
	.word	0				/* 0x1fc root_dev */
	.word	0xaa55				/* 0x1fe boot_flag */
	.org	0x200
	jmp	setup_start			/* 0x200 jump */
	.ascii	"HdrS"				/* 0x202 header */
	.word	0x020f				/* 0x206 version */
	.long	0				/* 0x208 realmode_swtch */
	.word	0				/* 0x20c start_sys_seg */
	.word	0				/* 0x20e kernel_version */
	.byte	0				/* 0x210 type_of_loader */
	.byte	0x01				/* 0x211 loadflags: LOADED_HIGH */
	.word	0				/* 0x212 setup_move_size */
	.long	0x100000			/* 0x214 code32_start */
	.long	0				/* 0x218 ramdisk_image */
	.long	0				/* 0x21c ramdisk_size */
	.long	0				/* 0x220 bootsect_kludge */
	.word	0				/* 0x224 heap_end_ptr */
	.byte	0				/* 0x226 ext_loader_ver */
	.byte	0				/* 0x227 ext_loader_type */
	.long	0				/* 0x228 cmd_line_ptr */
	.long	0x7fffffff			/* 0x22c initrd_addr_max */
	.long	0x200000			/* 0x230 kernel_alignment */
	.byte	0				/* 0x234 relocatable_kernel */
	.byte	0				/* 0x235 min_alignment */
	.word	0x0001				/* 0x236 xloadflags: XLF_KERNEL_64 */
	.long	2048				/* 0x238 cmdline_size */
	.long	0				/* 0x23c hardware_subarch */
	.quad	0				/* 0x240 hardware_subarch_data */
	.long	0				/* 0x248 payload_offset */
	.long	0				/* 0x24c payload_length */
	.quad	0				/* 0x250 setup_data */
	.quad	0x100000			/* 0x258 pref_address */
	.long	_probe_init_size		/* 0x260 init_size */
	.long	0				/* 0x264 handover_offset */
	.long	0				/* 0x268 kernel_info_offset */
	.org	HDR_END

setup_start:
	cli
	cld
	pushw	%ds				/* CS := seg, so offsets match our link */
	pushw	$setup_norm
	lretw
setup_norm:
	mov	%ds, %ax
	mov	%ax, %es
	mov	%ax, %ss
	mov	$0x3000, %sp			/* seg:0x2000..0x2fff */

	/* zero page: clear, copy the (loader-filled) setup header */
	mov	$ZP, %di
	xor	%ax, %ax
	mov	$0x800, %cx
	rep stosw
	mov	$HDR_START, %si
	mov	$ZP + HDR_START, %di
	mov	$HDR_END - HDR_START, %cx
	rep movsb

	/* BIOS E820 map into boot_params.e820_table (0x2d0), count at 0x1e8 */
	xor	%ebx, %ebx
	mov	$ZP + 0x2d0, %di
	xor	%bp, %bp
1:	mov	$0xe820, %eax
	mov	$20, %ecx
	mov	$SMAP, %edx
	int	$0x15
	jc	2f
	cmp	$SMAP, %eax
	jne	2f
	add	$20, %di
	inc	%bp
	test	%ebx, %ebx
	jz	2f
	cmp	$128, %bp
	jb	1b
2:	mov	%bp, %ax
	mov	%al, ZP + 0x1e8

	/* linear addresses: zero page (%esi), GDT base, 32-bit entry */
	xor	%eax, %eax
	mov	%ds, %ax
	shl	$4, %eax
	lea	ZP(%eax), %esi
	lea	setup_gdt(%eax), %edx
	mov	%edx, setup_gdt_desc + 2
	lea	setup_pm(%eax), %edx
	mov	%edx, setup_pm_vec
	mov	ZP + 0x214, %edi		/* code32_start */

	cli
	lgdtl	setup_gdt_desc
	mov	%cr0, %eax
	or	$1, %eax
	mov	%eax, %cr0
	ljmpl	*setup_pm_vec

	.code32
setup_pm:
	mov	$0x18, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	xor	%ebp, %ebp
	xor	%ebx, %ebx
	jmp	*%edi

	.balign 8
setup_gdt:
	.quad	0
	.quad	0
	.quad	0x00cf9a000000ffff		/* 0x10: __BOOT_CS, flat 32-bit code */
	.quad	0x00cf92000000ffff		/* 0x18: __BOOT_DS, flat data */
setup_gdt_end:
setup_gdt_desc:
	.word	setup_gdt_end - setup_gdt - 1
	.long	0				/* base, patched at run time */
setup_pm_vec:
	.long	0				/* offset, patched at run time */
	.word	0x10

	.org	(SETUP_SECTS + 1) * 512		/* pad to whole sectors */

	.section .note.GNU-stack, "", @progbits
