/* The relocation journal: what a restore that relocates rings is about to
 * do, written into the target before it changes anything else, so that a
 * later aiotk can undo it whatever step this one was SIGKILLed at.
 *
 * A relocation is a transaction of many changes (rings made at their new
 * addresses, then every copy of each old id rewritten, one word or
 * register at a time); none of them says by itself which ids were being
 * swapped. The journal does: each ring's old id and length, its new id
 * and length. While it exists, the restore is not done: a later aiotk
 * puts every copy of each new id back to the old one and destroys what
 * was made at the new addresses (relocate.lua, relocate.recover), which
 * is the process as before the restore. Removing it is the commit: one
 * munmap, the restore's last change but the destruction of the rings it
 * replaces (docs/ARCHITECTURE.md, "Restore").
 *
 * It is a shared anonymous mapping (refs.c scans private memory only, so
 * the ids written here are never taken for the program's copies) at a
 * fixed address, AIOTK_RELOC_AT: a mapping of that shape there is
 * aiotk's even before its magic is written (the entries go first, then
 * the magic, so a journal with its magic is whole). */
#define _GNU_SOURCE
#include "target/target.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

struct head {
	uint64_t magic; /* AIOTK_RELOC_MAGIC once the entries are written */
	uint64_t n;
};

static uint64_t journal_len(size_t n)
{
	return aiotk_page_round(sizeof(struct head) + n * sizeof(aiotk_reloc_entry));
}

static int is_journal(const aiotk_vma *v)
{
	return v->start == AIOTK_RELOC_AT && !strcmp(v->perms, "rw-s") &&
	       !strcmp(v->path, AIOTK_SHARED_ANON_PATH);
}

/* The mapping at AIOTK_RELOC_AT, if there is one: 1 and *v, else 0. */
static int mapping(aiotk_target *t, aiotk_vma *v, aiotk_err *err)
{
	int rc = aiotk_maps_overlap(t->pid, AIOTK_RELOC_AT, AIOTK_PAGE, 0, v, err);
	if (rc <= 0)
		return rc;
	if (is_journal(v))
		return 1;
	char what[600];
	aiotk_vma_describe(v, what, sizeof(what));
	return aiotk_fail(err, AIOTK_EOCCUPIED, EEXIST,
			  "process %d: the address 0x%llx aiotk keeps a relocation journal at is taken "
			  "by %s; nothing was changed", t->pid, (unsigned long long)AIOTK_RELOC_AT, what);
}

int aiotk_reloc_journal_write(aiotk_target *t, const aiotk_reloc_entry *e, size_t n,
			      aiotk_err *err)
{
	aiotk_vma v;
	int rc = mapping(t, &v, err);
	if (rc)
		return rc < 0 ? rc : aiotk_fail(err, AIOTK_EOCCUPIED, EEXIST,
						"process %d: a relocation journal is already at 0x%llx "
						"(restore removes it first); nothing was changed",
						t->pid, (unsigned long long)AIOTK_RELOC_AT);
	uint64_t len = journal_len(n);
	long r = aiotk_sys(t, SYS_mmap, (long)AIOTK_RELOC_AT, (long)len, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (aiotk_sys_failed(r) || (uint64_t)r != AIOTK_RELOC_AT) {
		if (!aiotk_sys_failed(r))
			aiotk_scratch_unmap(t, (uint64_t)r, len);
		return aiotk_fail(err, AIOTK_EOCCUPIED, aiotk_sys_failed(r) ? (int)-r : EEXIST,
				  "process %d: no room for aiotk's relocation journal at 0x%llx: %s; "
				  "nothing was changed", t->pid, (unsigned long long)AIOTK_RELOC_AT,
				  strerror(aiotk_sys_failed(r) ? (int)-r : EEXIST));
	}
	struct head h = { 0, n };
	rc = aiotk_poke(t, AIOTK_RELOC_AT + sizeof(h), e, n * sizeof(*e), err);
	if (!rc)
		rc = aiotk_poke(t, AIOTK_RELOC_AT, &h, sizeof(h), err);
	h.magic = AIOTK_RELOC_MAGIC;
	if (!rc)
		rc = aiotk_poke(t, AIOTK_RELOC_AT, &h.magic, sizeof(h.magic), err);
	if (rc)
		aiotk_scratch_unmap(t, AIOTK_RELOC_AT, len);
	return rc;
}

int aiotk_reloc_journal_read(aiotk_target *t, aiotk_reloc_entry **out, size_t *n,
			     aiotk_err *err)
{
	aiotk_vma v;
	struct head h;
	*out = NULL, *n = 0;
	int rc = mapping(t, &v, err);
	if (rc <= 0)
		return rc;
	if ((rc = aiotk_peek(t, AIOTK_RELOC_AT, &h, sizeof(h), err)))
		return rc;
	/* no magic: killed before the entries were whole, nothing else done */
	if (h.magic != AIOTK_RELOC_MAGIC || journal_len(h.n) > v.end - v.start)
		return 1;
	if (!h.n)
		return 1;
	*out = calloc(h.n, sizeof(**out));
	if (!*out)
		return aiotk_fail(err, AIOTK_ENOMEM, ENOMEM, "out of memory for %llu journal entries",
				  (unsigned long long)h.n);
	if ((rc = aiotk_peek(t, AIOTK_RELOC_AT + sizeof(h), *out, h.n * sizeof(**out), err))) {
		free(*out);
		*out = NULL;
		return rc;
	}
	*n = h.n;
	return 1;
}

int aiotk_reloc_journal_remove(aiotk_target *t, aiotk_err *err)
{
	aiotk_vma v;
	int rc = mapping(t, &v, err);
	if (rc <= 0)
		return rc;
	long r = aiotk_sys(t, SYS_munmap, (long)v.start, (long)(v.end - v.start), 0, 0, 0, 0);
	if (aiotk_sys_failed(r))
		return aiotk_fail(err, AIOTK_ESYS, (int)-r, "removing the relocation journal at 0x%llx: %s",
				  (unsigned long long)AIOTK_RELOC_AT, strerror((int)-r));
	return 0;
}
