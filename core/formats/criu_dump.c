/* A CRIU dump directory: for every mm-PID.img, the rings' bytes from
 * pagemap-PID.img (pagemap_head.pages_id, then entries) and the raw
 * pages-ID.img, where PRESENT entries' pages follow each other in order.
 * An entry may span several rings, or a ring several entries. */
#define _GNU_SOURCE
#include "formats/formats.h"
#include "aio/aio.h"
#include "criu_pagemap.pb-c.h"

#include <dirent.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IMG_MAGIC 0x54564319u
#define PAGEMAP_MAGIC 0x56084025u
#define PE_PARENT 1u
#define PE_PRESENT 4u
#define MAX_IMG (256u << 20)

/* parent: the pages are only in the parent dump's images (no file_off) */
struct span { uint64_t vaddr, pages, file_off; int parent; };

struct pagemap {
	unsigned pages_id;
	size_t n;
	struct span *spans;
};

static uint32_t u32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int slurp(const char *path, uint8_t **buf, size_t *len, aiotk_err *err)
{
	return fmt_load(path, "", MAX_IMG, buf, len, err);
}

static int pm_entry(const uint8_t *p, uint32_t n, struct pagemap *pm, uint64_t *off,
		    const char *path, aiotk_err *err)
{
	CriuPagemapEntry *e = criu_pagemap_entry__unpack(NULL, n, p);
	if (!e)
		return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: entry %zu is not valid protobuf", path, pm->n);
	uint64_t pages = e->has_nr_pages ? e->nr_pages : e->compat_nr_pages;
	int present = e->has_flags ? (e->flags & PE_PRESENT) != 0 : !e->in_parent;
	int parent = e->has_flags ? (e->flags & PE_PARENT) != 0 : e->in_parent;
	struct span s = { e->vaddr, pages, *off, parent };
	criu_pagemap_entry__free_unpacked(e, NULL);
	if (!present && !parent)
		return 0;
	struct span *ns = realloc(pm->spans, (pm->n + 1) * sizeof(*ns));
	if (!ns)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	pm->spans = ns;
	pm->spans[pm->n++] = s;
	*off += parent ? 0 : pages;
	return 0;
}

static int decode_pagemap(const uint8_t *b, size_t len, const char *path,
			  struct pagemap *pm, aiotk_err *err)
{
	memset(pm, 0, sizeof(*pm));
	if (len < 8 || u32le(b) != IMG_MAGIC || u32le(b + 4) != PAGEMAP_MAGIC)
		return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: not a CRIU pagemap image (bad magic)", path);
	uint64_t page_off = 0;
	int head = 1;
	for (size_t off = 8; off < len;) {
		if (len - off < 4)
			return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: truncated at offset %zu", path, off);
		uint32_t n = u32le(b + off);
		if (n > len - off - 4)
			return aiotk_fail(err, AIOTK_EIMAGE, 0,
					  "%s: entry at offset %zu claims %u bytes, %zu left (truncated)",
					  path, off, n, len - off - 4);
		if (head) {
			CriuPagemapHead *h = criu_pagemap_head__unpack(NULL, n, b + off + 4);
			if (!h || !h->has_pages_id) {
				if (h)
					criu_pagemap_head__free_unpacked(h, NULL);
				return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: no pagemap_head.pages_id", path);
			}
			pm->pages_id = h->pages_id;
			criu_pagemap_head__free_unpacked(h, NULL);
			head = 0;
		} else {
			int rc = pm_entry(b + off + 4, n, pm, &page_off, path, err);
			if (rc)
				return rc;
		}
		off += 4 + n;
	}
	if (head)
		return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: empty pagemap", path);
	return 0;
}

int aiotk_criu_decode_pagemap(const uint8_t *buf, size_t len, const char *name,
			      size_t *present, aiotk_err *err)
{
	struct pagemap pm;
	int rc = decode_pagemap(buf, len, name, &pm, err);
	*present = pm.n;
	free(pm.spans);
	return rc;
}

#define IN_PARENT ((off_t)-2)

/* Where page a sits in the pages file; -1 when the dump has no such page,
 * IN_PARENT when only its parent dump has it. */
static off_t page_at(const struct pagemap *pm, uint64_t a, unsigned page)
{
	for (size_t i = 0; i < pm->n; i++)
		if (a >= pm->spans[i].vaddr && a < pm->spans[i].vaddr + pm->spans[i].pages * page)
			return pm->spans[i].parent ? IN_PARENT :
				(off_t)((pm->spans[i].file_off * page) + (a - pm->spans[i].vaddr));
	return -1;
}

/* Copy [addr, addr+len) out of the pages file, page by page. A page the
 * dump does not hold reads as zeros, as CRIU restores it (never-touched
 * memory, or the part of a ring aiotk grew); *missing gets the first such
 * offset into the ring (len when none), for the caller to check against
 * the live events. The header's page must be there. */
static int ring_bytes(const struct pagemap *pm, int fd, uint64_t addr, uint64_t len,
		      unsigned page, uint8_t *out, uint64_t *missing, const char *what,
		      aiotk_err *err)
{
	*missing = len;
	for (uint64_t a = addr; a < addr + len; a += page) {
		off_t at = page_at(pm, a, page);
		if (at == IN_PARENT)
			return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0,
					  "%s: page 0x%llx of ring 0x%llx is in the parent image (the dump's "
					  "`parent` link: criu dump --prev-images-dir); aiotk reads rings from a "
					  "dump without --prev-images-dir (a full dump)",
					  what, (unsigned long long)a, (unsigned long long)addr);
		if (at < 0 && a == addr)
			return aiotk_fail(err, AIOTK_EIMAGE, 0,
					  "%s: the header page 0x%llx of ring 0x%llx is not in the dump's pages",
					  what, (unsigned long long)a, (unsigned long long)addr);
		if (at < 0) {
			memset(out + (a - addr), 0, page);
			if (*missing == len)
				*missing = a - addr;
			continue;
		}
		if (pread(fd, out + (a - addr), page, at) != (ssize_t)page)
			return aiotk_fail(err, AIOTK_EIMAGE, 0,
					  "%s: pages file ends before page 0x%llx of ring 0x%llx",
					  what, (unsigned long long)a, (unsigned long long)addr);
	}
	return 0;
}

/* The ring's own header and events, as they were in memory; no live
 * event may lie at or past `missing` (the first page the dump lacks). */
static int ring_from_bytes(aiotk_ring *r, const uint8_t *b, unsigned page, uint64_t missing,
			   const char *what, aiotk_err *err)
{
	aiotk_ring_header h;
	memcpy(&h, b, sizeof(h));
	aiotk_ring_set_header(r, &h);
	r->nevents = r->head < r->nr && r->tail < r->nr ? aiotk_ring_live(r->nr, r->head, r->tail) : 0;
	aiotk_err v;
	if (aiotk_ring_validate(r, page, &v))
		return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: %s", what, v.msg);
	r->area = malloc((size_t)r->nr * sizeof(aiotk_event));
	r->events = malloc((r->nevents + 1) * sizeof(aiotk_event));
	if (!r->area || !r->events)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	memcpy(r->area, b + AIOTK_HEADER_LEN, (size_t)r->nr * sizeof(aiotk_event));
	for (uint32_t i = 0; i < r->nevents; i++) {
		uint32_t slot = (r->head + i) % r->nr;
		if (AIOTK_HEADER_LEN + (uint64_t)(slot + 1) * sizeof(aiotk_event) > missing)
			return aiotk_fail(err, AIOTK_EIMAGE, 0,
					  "%s: live event slot %u of ring 0x%llx lies in a page the dump does not hold",
					  what, slot, (unsigned long long)r->addr);
		r->events[i] = r->area[slot];
	}
	return 0;
}

static int read_rings(const char *dir, aiotk_criu_proc *p, unsigned page, aiotk_err *err)
{
	char path[1024], pages[1024];
	uint8_t *buf;
	size_t len;
	struct pagemap pm;
	snprintf(path, sizeof(path), "%s/pagemap-%d.img", dir, p->pid);
	int rc = slurp(path, &buf, &len, err);
	if (rc)
		return rc;
	rc = decode_pagemap(buf, len, path, &pm, err);
	free(buf);
	if (rc) {
		free(pm.spans);
		return rc;
	}
	snprintf(pages, sizeof(pages), "%s/pages-%u.img", dir, pm.pages_id);
	struct stat st;
	int fd = open(pages, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0 && (fstat(fd, &st) || !S_ISREG(st.st_mode))) {
		close(fd);
		fd = -1;
		errno = EINVAL;
	}
	if (fd < 0)
		rc = aiotk_fail(err, AIOTK_EIMAGE, errno, "cannot open %s (named by %s): %s",
				pages, path, strerror(errno));
	for (size_t i = 0; !rc && i < p->nrings; i++) {
		aiotk_ring *r = &p->rings[i].ring;
		uint8_t *bytes = r->ring_len <= (256u << 20) && r->ring_len >= page ? malloc(r->ring_len) : NULL;
		if (!bytes) {
			rc = aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: ring 0x%llx has an absurd length %llu",
					p->mm_path, (unsigned long long)r->addr, (unsigned long long)r->ring_len);
			break;
		}
		uint64_t missing;
		rc = ring_bytes(&pm, fd, r->addr, r->ring_len, page, bytes, &missing, pages, err);
		if (!rc)
			rc = ring_from_bytes(r, bytes, page, missing, p->mm_path, err);
		snprintf(p->rings[i].pages_path, sizeof(p->rings[i].pages_path), "%s", pages);
		p->rings[i].header_off = (uint64_t)page_at(&pm, r->addr, page);
		free(bytes);
	}
	if (fd >= 0)
		close(fd);
	free(pm.spans);
	return rc;
}

/* page 0: the mm image only, the rings' bytes not read. */
static int read_proc(const char *dir, int pid, unsigned page, aiotk_criu_proc *p, aiotk_err *err)
{
	uint8_t *buf;
	size_t len;
	p->pid = pid;
	snprintf(p->mm_path, sizeof(p->mm_path), "%s/mm-%d.img", dir, pid);
	int rc = slurp(p->mm_path, &buf, &len, err);
	if (rc)
		return rc;
	rc = aiotk_criu_decode_mm(buf, len, p->mm_path, p, err);
	p->mm = buf;
	p->mm_len = len;
	return rc || !page ? rc : read_rings(dir, p, page, err);
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* pids of mm-PID.img files, sorted. */
static int list_pids(const char *dir, int **pids, size_t *n, aiotk_err *err)
{
	DIR *d = opendir(dir);
	if (!d)
		return aiotk_fail(err, AIOTK_EIMAGE, errno, "cannot open CRIU dump directory %s: %s",
				  dir, strerror(errno));
	*n = 0;
	*pids = NULL;
	for (struct dirent *e; (e = readdir(d));) {
		int pid;
		char tail[8];
		if (sscanf(e->d_name, "mm-%d.%7s", &pid, tail) != 2 || strcmp(tail, "img"))
			continue;
		int *np = realloc(*pids, (*n + 1) * sizeof(int));
		if (!np) {
			closedir(d);
			free(*pids);
			*pids = NULL;
			return aiotk_fail(err, AIOTK_ENOMEM, ENOMEM, "%s: out of memory listing mm-PID.img files", dir);
		}
		*pids = np;
		(*pids)[(*n)++] = pid;
	}
	closedir(d);
	if (!*n)
		return aiotk_fail(err, AIOTK_EEMPTY, 0,
				  "%s: no mm-PID.img files; is this a CRIU dump directory?", dir);
	qsort(*pids, *n, sizeof(int), cmp_int);
	return 0;
}

int aiotk_criu_read_mm(const char *dir, aiotk_criu_dump *d, aiotk_err *err)
{
	return aiotk_criu_read(dir, 0, d, err);
}

int aiotk_criu_read(const char *dir, unsigned page_size, aiotk_criu_dump *d, aiotk_err *err)
{
	int *pids = NULL;
	size_t n = 0;
	memset(d, 0, sizeof(*d));
	int rc = list_pids(dir, &pids, &n, err);
	if (rc)
		return rc;
	d->procs = calloc(n, sizeof(*d->procs));
	if (!d->procs)
		rc = aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	for (size_t i = 0; !rc && i < n; i++) {
		d->nprocs = i + 1;
		rc = read_proc(dir, pids[i], page_size, &d->procs[i], err);
	}
	free(pids);
	if (rc)
		aiotk_criu_free(d);
	return rc;
}

int aiotk_criu_set_header_nr(const aiotk_criu_ring *r, uint32_t nr, aiotk_err *err)
{
	int fd = open(r->pages_path, O_WRONLY | O_CLOEXEC);
	off_t at = (off_t)(r->header_off + offsetof(aiotk_ring_header, nr));
	int ok = fd >= 0 && pwrite(fd, &nr, sizeof(nr), at) == (ssize_t)sizeof(nr) && !fsync(fd);
	int e = errno;
	if (fd >= 0)
		close(fd);
	return ok ? 0 : aiotk_fail(err, AIOTK_ESYS, e, "cannot write the header of ring 0x%llx in %s: %s",
				   (unsigned long long)r->ring.addr, r->pages_path, strerror(e));
}

/* The len bytes at buf are one whole varint: continuation bits on all
 * but the last. */
static int one_varint(const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!(buf[i] & 0x80) != (i + 1 == len))
			return 0;
	return len > 0;
}

int aiotk_criu_patch_nr_req_file(const char *path, const aiotk_criu_ring *r, uint32_t n, int flags,
				 aiotk_err *err)
{
	uint8_t b[5];
	size_t w = r->nr_req_len;
	if (!w || w > sizeof(b))
		return aiotk_fail(err, AIOTK_EINVAL, 0, "nr_req of ring 0x%llx: %zu bytes is no varint it had",
				  (unsigned long long)r->ring.addr, w);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return aiotk_fail(err, AIOTK_ESYS, errno, "cannot open %s: %s", path, strerror(errno));
	aiotk_criu_ring at = *r;
	at.nr_req_off = 0;
	int rc = 0;
	if (pread(fd, b, w, (off_t)r->nr_req_off) != (ssize_t)w || !one_varint(b, w))
		rc = aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: no %zu-byte nr_req varint at offset %zu (the file "
				"changed since it was read); nothing was written", path, w, r->nr_req_off);
	else if (!(rc = aiotk_criu_patch_nr_req(b, w, &at, n, err)) &&
		 (pwrite(fd, b, w, (off_t)r->nr_req_off) != (ssize_t)w ||
		  (!(flags & AIOTK_WRITE_NOSYNC) && fsync(fd))))
		rc = aiotk_fail(err, AIOTK_ESYS, errno, "cannot write nr_req in %s: %s", path, strerror(errno));
	close(fd);
	return rc;
}

void aiotk_criu_free(aiotk_criu_dump *d)
{
	for (size_t i = 0; i < d->nprocs; i++) {
		for (size_t k = 0; k < d->procs[i].nrings; k++)
			aiotk_ring_free(&d->procs[i].rings[k].ring);
		free(d->procs[i].rings);
		free(d->procs[i].mm);
	}
	free(d->procs);
	memset(d, 0, sizeof(*d));
}
