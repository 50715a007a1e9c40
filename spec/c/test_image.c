/* Images: round trip, atomic write, and a corruption sweep in which every
 * damaged image ends in a clean AIOTK_EIMAGE naming the file. */
#include "aiotk.h"
#include "check.h"

#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void make_ring(aiotk_ring *r, uint64_t addr, uint32_t nr, uint32_t h,
		      uint32_t t, int area)
{
	memset(r, 0, sizeof(*r));
	r->addr = addr;
	r->nr = nr;
	r->ring_len = aiotk_geom_len_for_nr(nr, 4096);
	r->head = h;
	r->tail = t;
	r->magic = AIOTK_RING_MAGIC;
	r->header_length = 32;
	r->compat_features = 1;
	r->n = 7;
	r->nevents = aiotk_ring_live(nr, h, t);
	r->events = calloc(r->nevents + 1, sizeof(aiotk_event));
	for (uint32_t i = 0; i < r->nevents; i++)
		r->events[i] = (aiotk_event){ 0xA000000000000000ull + i, 0xffffffffffff0000ull | i,
					      -(int64_t)i, INT64_MIN + i };
	if (area) {
		r->area = calloc(nr, sizeof(aiotk_event));
		for (uint32_t i = 0; i < nr; i++)
			r->area[i].data = i;
	}
}

static void sample(aiotk_image *img)
{
	aiotk_host h;
	aiotk_ring r;
	aiotk_host_probe(&h, NULL);
	aiotk_image_init_host(img, &h);
	img->pid = 1234;
	img->stopped_ns = 5678;
	make_ring(&r, 0x7f0000000000ull, 127, 10, 15, 0);
	aiotk_image_add_ring(img, &r, NULL);
	aiotk_ring_free(&r);
	make_ring(&r, 0x7f0000100000ull, 383, 333, 50, 1);
	aiotk_image_add_ring(img, &r, NULL);
	aiotk_ring_free(&r);
	make_ring(&r, 0x7f0000200000ull, 255, 0, 0, 0);
	aiotk_image_add_ring(img, &r, NULL);
	aiotk_ring_free(&r);
}

static int same_ring(const aiotk_ring *a, const aiotk_ring *b)
{
	if (a->addr != b->addr || a->ring_len != b->ring_len || a->nr != b->nr ||
	    a->head != b->head || a->tail != b->tail || a->n != b->n ||
	    a->nevents != b->nevents || !a->area != !b->area)
		return 0;
	if (memcmp(a->events, b->events, a->nevents * sizeof(aiotk_event)))
		return 0;
	return !a->area || !memcmp(a->area, b->area, a->nr * sizeof(aiotk_event));
}

static void round_trip(const char *dir)
{
	aiotk_image img, back;
	aiotk_err err;
	sample(&img);
	int rc = aiotk_image_write(dir, &img, &err);
	CHECK_OK(rc, err);
	rc = aiotk_image_read(dir, &back, &err);
	CHECK_OK(rc, err);
	if (rc)
		return;
	CHECK(back.nrings == 3 && back.pid == 1234 && back.stopped_ns == 5678 &&
	      back.cpus == img.cpus && back.time_ns == img.time_ns &&
	      !strcmp(back.release, img.release), "header round trip");
	for (size_t i = 0; i < 3 && i < back.nrings; i++)
		CHECK(same_ring(&img.rings[i], &back.rings[i]), "ring %zu round trip", i);
	/* Nothing but the image is left in the directory (no temp files). */
	DIR *d = opendir(dir);
	int others = 0;
	for (struct dirent *e; d && (e = readdir(d));)
		others += e->d_name[0] != '.' && strcmp(e->d_name, AIOTK_IMAGE_FILE);
	if (d)
		closedir(d);
	CHECK(others == 0, "%d stray files", others);
	aiotk_image_free(&img);
	aiotk_image_free(&back);
}

static int decode_fails_cleanly(const uint8_t *buf, size_t len, const char *what)
{
	aiotk_image img;
	aiotk_err err;
	memset(&err, 0, sizeof(err));
	int rc = aiotk_image_decode(buf, len, "rings.img", &img, &err);
	if (rc == 0) {
		aiotk_image_free(&img);
		return 0;
	}
	CHECK(rc == AIOTK_EIMAGE && strstr(err.msg, "rings.img"), "%s: rc %d msg %s", what, rc,
	      err.msg);
	return 1;
}

static uint32_t u32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

static void corruption_sweep(void)
{
	aiotk_image img;
	aiotk_err err;
	uint8_t *buf;
	size_t len;
	char what[64];
	sample(&img);
	CHECK(aiotk_image_encode(&img, &buf, &len, &err) == 0, "encode");
	aiotk_image_free(&img);
	/* Truncation at every record boundary, and at every 7th byte. */
	int boundaries = 0;
	for (size_t off = 4; off < len; off += 8 + u32(buf + off)) {
		snprintf(what, sizeof(what), "cut at record boundary %zu", off);
		CHECK(decode_fails_cleanly(buf, off, what), "%s decoded", what);
		boundaries++;
	}
	CHECK(boundaries == 4, "%d records", boundaries);
	for (size_t cut = 0; cut < len; cut += 7) {
		snprintf(what, sizeof(what), "cut at %zu", cut);
		CHECK(decode_fails_cleanly(buf, cut, what), "%s decoded", what);
	}
	/* Single flipped bytes anywhere: checksum or magic catches each. */
	uint8_t *copy = malloc(len);
	for (size_t off = 0; off < len; off += 3) {
		memcpy(copy, buf, len);
		copy[off] ^= 0x5a;
		snprintf(what, sizeof(what), "flip at %zu", off);
		CHECK(decode_fails_cleanly(copy, len, what), "%s decoded", what);
	}
	/* Wrong magic, trailing junk, absurd record length. */
	memcpy(copy, buf, len);
	copy[0] = 'X';
	CHECK(decode_fails_cleanly(copy, len, "magic"), "bad magic decoded");
	uint8_t *longer = malloc(len + 5);
	memcpy(longer, buf, len);
	memset(longer + len, 0, 5);
	CHECK(decode_fails_cleanly(longer, len + 5, "trailing"), "trailing bytes decoded");
	memcpy(copy, buf, len);
	memset(copy + 4, 0xff, 4);
	CHECK(decode_fails_cleanly(copy, len, "absurd"), "absurd length decoded");
	free(longer);
	free(copy);
	free(buf);
}

/* Well-formed records carrying impossible values (checksums valid). */
static void bad_values(void)
{
	static const char *cases[] = {
		"head >= nr", "tail >= nr", "len unaligned", "nr vs len", "event count",
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		aiotk_image img;
		aiotk_ring r;
		aiotk_host h;
		uint8_t *buf;
		size_t len;
		aiotk_host_probe(&h, NULL);
		aiotk_image_init_host(&img, &h);
		make_ring(&r, 0x7f0000000000ull, 127, 10, 15, 0);
		switch (i) {
		case 0: r.head = 127; break;
		case 1: r.tail = 200; break;
		case 2: r.ring_len = 4096 + 512; break;
		case 3: r.nr = 255; break;
		case 4: r.nevents = 3; break;
		}
		aiotk_image_add_ring(&img, &r, NULL);
		aiotk_image_encode(&img, &buf, &len, NULL);
		CHECK(decode_fails_cleanly(buf, len, cases[i]), "%s decoded", cases[i]);
		free(buf);
		aiotk_ring_free(&r);
		aiotk_image_free(&img);
	}
}

static void missing_and_unwritable(const char *dir)
{
	aiotk_image img;
	aiotk_err err;
	CHECK(aiotk_image_read("/nonexistent/dir", &img, &err) == AIOTK_EIMAGE &&
	      strstr(err.msg, "/nonexistent/dir/rings.img"), "missing: %s", err.msg);
	sample(&img);
	char path[512];
	snprintf(path, sizeof(path), "%s/file", dir);
	FILE *f = fopen(path, "w");
	fclose(f);
	CHECK(aiotk_image_write(path, &img, &err) == AIOTK_ESYS, "write into a file: %s", err.msg);
	aiotk_image_free(&img);
	unlink(path);
}

static off_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) ? -1 : st.st_size;
}

/* A CRIU dump's images in one file: tasks appended and read back by
 * task; an append that cannot be written whole (the file size limit, a
 * real EFBIG from the kernel) leaves the file as it was; a file cut or
 * with a bad magic reads as damaged, naming it; none is AIOTK_EEMPTY. */
static void pack(const char *dir)
{
	aiotk_image img;
	aiotk_pack p;
	aiotk_pack_entry *e;
	aiotk_err err;
	size_t n;
	char path[512];
	snprintf(path, sizeof(path), "%s/aiotk-rings.img", dir);
	CHECK(aiotk_pack_read(path, &e, &n, &err) == AIOTK_EEMPTY, "no file: %s", err.msg);
	sample(&img);
	CHECK_OK(aiotk_pack_create(path, &p, &err), err);
	CHECK_OK(aiotk_pack_append(&p, 1, &img, &err), err);
	img.pid = 99;
	CHECK_OK(aiotk_pack_append(&p, 7, &img, &err), err);
	off_t two = file_size(path);
	struct rlimit old, lim = { (rlim_t)two + 100, RLIM_INFINITY };
	getrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, SIG_IGN);
	setrlimit(RLIMIT_FSIZE, &lim);
	int rc = aiotk_pack_append(&p, 8, &img, &err);
	setrlimit(RLIMIT_FSIZE, &old);
	CHECK(rc == AIOTK_ESYS && strstr(err.msg, "task 8") && p.count == 2, "append over the limit: %d %s",
	      rc, err.msg);
	CHECK(file_size(path) == two, "file left at %lld bytes, was %lld", (long long)file_size(path),
	      (long long)two);
	aiotk_pack_close(&p);
	CHECK_OK(aiotk_pack_read(path, &e, &n, &err), err);
	CHECK(n == 2 && e[0].task == 1 && e[1].task == 7 && e[1].img.pid == 99 && e[0].img.nrings == 3,
	      "%zu records read back", n);
	for (size_t i = 0; n == 2 && i < 3; i++)
		CHECK(same_ring(&img.rings[i], &e[1].img.rings[i]), "ring %zu round trip", i);
	aiotk_pack_free(e, n);
	aiotk_image_free(&img);
	CHECK(truncate(path, two - 1) == 0, "truncate");
	CHECK(aiotk_pack_read(path, &e, &n, &err) == AIOTK_EIMAGE && strstr(err.msg, path) && n == 0,
	      "cut: %s", err.msg);
	CHECK(truncate(path, 2) == 0, "truncate");
	CHECK(aiotk_pack_read(path, &e, &n, &err) == AIOTK_EIMAGE && strstr(err.msg, "bad magic"),
	      "no magic: %s", err.msg);
	unlink(path);
}

/* A spare: made ahead, then the write goes through it (no other file
 * left), or dropped (nothing left). */
static void spare(const char *dir)
{
	aiotk_spare s;
	aiotk_err err;
	char dst[512], got[16] = { 0 };
	snprintf(dst, sizeof(dst), "%s/stamped", dir);
	CHECK_OK(aiotk_spare_make(dst, &s, &err), err);
	CHECK(file_size(s.path) == 0, "spare %s not made empty", s.path);
	CHECK_OK(aiotk_write_file_via(&s, dst, (const uint8_t *)"hello", 5, AIOTK_WRITE_NOSYNC, &err), err);
	FILE *f = fopen(dst, "r");
	CHECK(f && fread(got, 1, sizeof(got), f) == 5 && !strcmp(got, "hello"), "content %s", got);
	if (f)
		fclose(f);
	CHECK(s.fd == -1 && file_size(s.path) == -1, "the spare %s is still there", s.path);
	aiotk_spare_drop(&s); /* used: nothing to do */
	CHECK(file_size(dst) == 5, "the file went with the spare");
	CHECK_OK(aiotk_spare_make(dst, &s, &err), err);
	char path[sizeof(s.path)];
	snprintf(path, sizeof(path), "%s", s.path);
	aiotk_spare_drop(&s);
	CHECK(file_size(path) == -1 && file_size(dst) == 5, "a dropped spare %s stays", path);
	unlink(dst);
}

int main(void)
{
	char dir[] = "/tmp/aiotk-image-XXXXXX";
	CHECK(mkdtemp(dir) != NULL, "mkdtemp");
	round_trip(dir);
	corruption_sweep();
	bad_values();
	missing_and_unwritable(dir);
	pack(dir);
	spare(dir);
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, AIOTK_IMAGE_FILE);
	unlink(path);
	rmdir(dir);
	return check_report();
}
