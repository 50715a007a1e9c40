/* Fuzz target for the image reader. Built with clang it is a libFuzzer
 * target; otherwise main() below runs a bounded, seeded mutation loop over
 * a valid image (truncations, bit flips, splices), so the test runs with
 * any compiler. Either way the reader must return, never crash or leak. */
#include "aiotk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	aiotk_image img;
	aiotk_err err;
	if (aiotk_image_decode(data, size, "fuzz", &img, &err) == 0) {
		for (size_t i = 0; i < img.nrings; i++)
			if (aiotk_ring_validate(&img.rings[i], img.page_size, &err))
				abort(); /* the reader let an invalid ring through */
		aiotk_image_free(&img);
	}
	return 0;
}

#ifndef AIOTK_LIBFUZZER
#include "xorshift.h"

/* An io_uring instance with one of each list and a mapping's bytes. */
static const aiotk_uring *seed_uring(void)
{
	static aiotk_uring_file file = { 0, 3, "/dev/null" };
	static aiotk_uring_buf ubuf = { 1, 0x10000, 4096 };
	static aiotk_uring_req req = { 13, 0xfeed, 3, 3, 0xc0000001, 0x1000000, 1, 0x7f0000200000ull,
		0x7f0000200080ull, 0, 0x80000, 1, 0, 0, 0, 0, 0 }; /* a multishot ACCEPT */
	static uint8_t bytes[64];
	static aiotk_uring_map map = { 0x7f0000100000ull, 0x7f0000100040ull, 0, bytes, 0 };
	static aiotk_uring u = { .fd = 5, .sq_entries = 8, .cq_entries = 16, .sq_head = 6,
		.sq_tail = 6, .cq_head = 2, .cq_tail = 5, .nfiles = 1, .files = &file,
		.nbufs = 1, .bufs = &ubuf, .nreqs = 1, .reqs = &req, .nmaps = 1, .maps = &map };
	return &u;
}

static void seed_image(uint8_t **buf, size_t *len)
{
	aiotk_image img;
	aiotk_ring r;
	memset(&img, 0, sizeof(img));
	img.format = AIOTK_IMAGE_FORMAT;
	img.cpus = 2;
	img.page_size = 4096;
	strcpy(img.release, "fuzz");
	memset(&r, 0, sizeof(r));
	r.addr = 0x7f0000000000ull;
	r.nr = 127;
	r.ring_len = 4096;
	r.head = 120;
	r.tail = 3;
	r.magic = AIOTK_RING_MAGIC;
	r.header_length = 32;
	r.nevents = aiotk_ring_live(127, 120, 3);
	r.events = calloc(r.nevents, sizeof(aiotk_event));
	aiotk_image_add_ring(&img, &r, NULL);
	aiotk_image_add_ring(&img, &r, NULL);
	aiotk_image_add_uring(&img, seed_uring(), NULL);
	aiotk_image_encode(&img, buf, len, NULL);
	aiotk_image_free(&img);
	aiotk_ring_free(&r);
}

/* A mutated image that keeps its checksums valid would need a recompute:
 * the mutations here also rewrite length and checksum fields at random,
 * which is how the decoder's bounds checks get exercised. */
static void mutate(uint8_t *b, size_t *len, size_t cap)
{
	int ops = 1 + (int)(next() % 4);
	for (int i = 0; i < ops && *len; i++) {
		size_t at = next() % *len;
		switch (next() % 5) {
		case 0: b[at] ^= (uint8_t)(1u << (next() % 8)); break;
		case 1: *len = at; break;
		case 2: b[at] = (uint8_t)next(); break;
		case 3: if (at + 4 <= *len) memset(b + at, 0xff, 4); break;
		case 4: if (*len < cap) b[(*len)++] = (uint8_t)next(); break;
		}
	}
}

int main(int argc, char **argv)
{
	long runs = argc > 1 ? atol(argv[1]) : 200000;
	uint8_t *seed, *work;
	size_t seed_len;
	seed_image(&seed, &seed_len);
	work = malloc(seed_len + 64);
	LLVMFuzzerTestOneInput(seed, seed_len);
	for (long i = 0; i < runs; i++) {
		size_t len = seed_len;
		memcpy(work, seed, seed_len);
		mutate(work, &len, seed_len + 64);
		LLVMFuzzerTestOneInput(work, len);
	}
	free(work);
	free(seed);
	printf("%ld passed, 0 failed\n", runs);
	return 0;
}
#endif
