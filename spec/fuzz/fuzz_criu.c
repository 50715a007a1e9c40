/* Fuzz target for the CRIU readers (mm and pagemap images) and the
 * relocation rewriters (mm, pagemap and pages, core, pstree). With clang:
 * libFuzzer; otherwise a bounded seeded mutation loop over the fixture
 * files named on the command line. The decoders must return, never crash
 * or read out of bounds (run under ASan in CI). */
#include "aiotk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	aiotk_criu_proc p;
	aiotk_err err;
	size_t present;
	if (aiotk_criu_decode_mm(data, size, "fuzz", &p, &err) == 0) {
		for (size_t i = 0; i < p.nrings; i++)
			if (p.rings[i].nr_req_off + p.rings[i].nr_req_len > size)
				abort(); /* an offset outside the buffer */
	}
	free(p.rings);
	aiotk_criu_decode_pagemap(data, size, "fuzz", &present, &err);
	/* relocation: the input as mm, pagemap (over a zeroed pages file),
	 * core and pstree image */
	static uint8_t pages[4 * 4096];
	aiotk_move m = { 0x7f0000000000, 4096, 0x7e0000000000 };
	uint32_t nr = 255;
	aiotk_criu_vma v = { 0x1000, 0x5000, 0, 1 };
	aiotk_criu_refs refs = { 0 };
	uint8_t *o1 = NULL, *o2 = NULL;
	size_t l1, l2, ntids;
	int *tids = NULL;
	if (!aiotk_criu_relocate_mm(data, size, "fuzz", &m, 8192, 1, &o1, &l1, &err))
		free(o1);
	if (!aiotk_criu_relocate_pages(data, size, pages, sizeof(pages), "fuzz", &v, 1, &m, &nr, 1, 4096,
				       &o1, &l1, &o2, &l2, &refs, &err)) {
		free(o1);
		free(o2);
	}
	if (!aiotk_criu_relocate_regs(data, size, "fuzz", &m, 1, &o1, &l1, &refs, &err))
		free(o1);
	aiotk_criu_refs_free(&refs);
	if (!aiotk_criu_threads(data, size, "fuzz", 1, &tids, &ntids, &err))
		free(tids);
	return 0;
}

#ifndef AIOTK_LIBFUZZER
#include "xorshift.h"

static uint8_t *load(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	uint8_t *b = malloc(*len + 64);
	if (b && fread(b, 1, *len, f) != *len) {
		free(b);
		b = NULL;
	}
	fclose(f);
	return b;
}

int main(int argc, char **argv)
{
	long runs = 0;
	for (int a = 1; a < argc; a++) {
		size_t len;
		uint8_t *seed = load(argv[a], &len), *work;
		if (!seed) {
			fprintf(stderr, "fuzz_criu: cannot read %s\n", argv[a]);
			return 1;
		}
		work = malloc(len + 64);
		LLVMFuzzerTestOneInput(seed, len);
		for (int i = 0; i < 50000; i++, runs++) {
			size_t n = len;
			memcpy(work, seed, len);
			for (int k = 1 + (int)(next() % 4); k > 0 && n; k--) {
				size_t at = next() % n;
				switch (next() % 4) {
				case 0: work[at] ^= (uint8_t)(1u << (next() % 8)); break;
				case 1: n = at; break;
				case 2: work[at] = (uint8_t)next(); break;
				case 3: work[at] = 0xff; break;
				}
			}
			LLVMFuzzerTestOneInput(work, n);
		}
		free(work);
		free(seed);
	}
	printf("%ld passed, 0 failed\n", runs);
	return runs ? 0 : 1;
}
#endif
