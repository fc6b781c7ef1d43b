#!/bin/sh
# check-guests.sh — sanity checks on the built test guests (run by `make`):
#  - disassembles every code section of every object, in the right CPU mode
#    (64/32/16-bit), and rejects instructions this host's KVM (kvm_pvm) cannot
#    emulate in guest ring 0: int3, cmpxchg16b, popcnt, rdtscp, xgetbv,
#    xsave/xrstor, SSE/MMX/AVX/x87 (any %xmm/%ymm/%zmm/%mm/%st operand),
#    clac/stac, movbe, rdpid, endbr. The single deliberate xgetbv
#    (exit=internal, in exit.o) is required to be there exactly once.
#  - PVH note only where expected, bzImage entry/header layout, firmware size
#    and reset vector.
# Usage: check-guests.sh OUTDIR   (objects are in OUTDIR/obj)
set -eu
OUT=${1:-./out}
O=$OUT/obj
fail=0
err() { echo "check-guests: $*" >&2; fail=1; }

# dis FILE SECTION MODE [SKIP_LABELS_ERE [ONLY_LABELS_ERE]]
# Prints "label<TAB>instruction" for each instruction outside skipped labels.
dis() {
	objdump -d -w --no-show-raw-insn -M "$3" -j "$2" "$1" | awk -F'\t' \
		-v skip="${4:-^$}" -v only="${5:-}" '
		/^[0-9a-f]+ <.*>:$/ { lab = $0; sub(/^[^<]*</, "", lab); sub(/>:$/, "", lab); next }
		NF >= 2 && $1 ~ /^ *[0-9a-f]+:$/ {
			if (lab ~ skip) next
			if (only != "" && lab !~ only) next
			print lab "\t" $2
		}'
}

# Reads "label<TAB>instruction" lines, prints the forbidden ones.
forbidden() {
	awk -F'\t' '{
		ins = $2; sub(/#.*/, "", ins)
		n = split(ins, w, /[ \t]+/); i = 1
		while (i <= n && (w[i] == "" || w[i] ~ /^(lock|rep|repz|repnz|repe|repne|cs|ds|es|fs|gs|ss|data16|data32|addr16|addr32|notrack|bnd|rex(\.[wrxb]+)?)$/)) i++
		m = w[i]
		if (m ~ /^(int3|cmpxchg16b|popcnt|rdtscp|xgetbv|xsetbv|xsave[a-z0-9]*|xrstor[a-z0-9]*|f[a-z0-9]*|wait|emms|ldmxcsr|stmxcsr|crc32[a-z]*|aes[a-z]*|pclmul[a-z]*|v[a-z0-9]+|clac|stac|movbe|rdpid|endbr32|endbr64)$/ \
		    || ins ~ /%([xyz]mm[0-9]+|mm[0-7]|st)/)
			print $1 ": " $2
	}'
}

check() {	# FILE SECTION MODE [SKIP [ONLY]]
	bad=$(dis "$@" | forbidden)
	case "$1:$bad" in
	*/exit.o:*) 	# exactly one xgetbv (exit=internal), nothing else
		[ "$(printf '%s\n' "$bad" | grep -c .)" -eq 1 ] && printf '%s' "$bad" | grep -q ': xgetbv' \
			|| err "$1 $2: expected exactly one xgetbv, got: $bad" ;;
	*:) ;;
	*) err "$1 $2 ($3): forbidden instructions:"; printf '%s\n' "$bad" >&2 ;;
	esac
}

# 64-bit / 32-bit code of the probe (C and assembly)
for f in "$O"/probe/*.o; do
	for s in $(objdump -h "$f" | awk '$2 ~ /^\.text/ { print $2 }'); do
		case "$s" in .text32*) check "$f" "$s" i386 ;; *) check "$f" "$s" x86-64 ;; esac
	done
done
[ -f "$O"/probe/exit.o ] && [ -n "$(dis "$O"/probe/exit.o .text x86-64 | forbidden)" ] || err "exit.o: xgetbv missing"
# 16-bit code (data labels skipped), the setup's 32-bit tail, tiny guests (32-bit)
check "$O"/probe/ap_trampoline.o .rodata.ap_trampoline i8086 '^msg_'
check "$O"/probe/bzimage_setup.o .setup i8086 '^(setup_begin|setup_gdt.*|setup_pm.*)$'
check "$O"/probe/bzimage_setup.o .setup i386 '^$' '^setup_pm$'
check "$O"/firmware/firmware.o .fw i8086 '^msg_'
for f in "$O"/tiny/*.o; do check "$f" .text i386 '^msg$'; done

for f in "$OUT"/probe-pvh.elf "$OUT"/tiny-*.elf; do
	readelf -n "$f" | grep -q '^ *Xen .*0x00000012' || err "$f: no Xen PVH note (type 0x12)"
done
readelf -n "$OUT"/probe-elf64.elf | grep -qi xen && err "probe-elf64.elf has a Xen note"
[ "$(nm "$OUT"/probe-elf64.elf | awk '$3 == "_start" { print $1 }')" = 0000000000100000 ] \
	|| err "probe-elf64.elf: _start is not at 0x100000"
[ "$(nm "$O"/probe/bzimage-pm.elf | awk '$3 == "startup_64" { print $1 }')" = 0000000000100200 ] \
	|| err "probe.bzimage: startup_64 is not at 0x100200"
[ "$(od -A n -t x1 -j 0x202 -N 4 "$OUT"/probe.bzimage | tr -d ' ')" = 48647253 ] || err "probe.bzimage: no HdrS"
[ "$(wc -c < "$OUT"/firmware.bin)" -eq 65536 ] || err "firmware.bin is not 64 KiB"
[ "$(od -A n -t x1 -j 0xfff0 -N 1 "$OUT"/firmware.bin | tr -d ' ')" = e9 ] || err "firmware.bin: no near jmp at 0xfff0"

[ $fail -eq 0 ] && echo "check-guests: OK"
exit $fail
