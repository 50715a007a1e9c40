/* The journal of an io_uring rebuild: what it is about to make in the
 * target, written into the target before each step, so that whatever
 * step aiotk dies at (SIGKILL: no undo runs), the next aiotk finds what
 * the rebuild had made and takes it away (aiotk_uring_leftovers).
 *
 * One private mapping at a fixed address, its slot's: made first,
 * unmapped last. At a fixed address so that it is found, and known as
 * aiotk's, even when aiotk died between making it and writing its first
 * bytes (this kernel has no CONFIG_ANON_VMA_NAME to name it:
 * docs/KERNEL-FACTS.md, "io_uring: a rebuild killed half-way").
 *
 * The commit: a rebuild alone unmaps its journal (slot 0) at its end. A
 * restore of several instances journals instance k in slot k and keeps
 * every journal until all are made; then aiotk_uring_commit unmaps slot
 * 0's first, which is the commit, and the others after, which from then
 * on are only garbage. So with slot 0 there, everything the journals
 * name is taken away again, the newest instance first; without it, the
 * other slots' journals are only unmapped. A rollback keeps slot 0's
 * journal while another slot's stays, so that a half-done undo never
 * reads as a commit.
 *
 * What it names, each written before it is made: the placeholders
 * (saved ranges held, gaps filled to steer the kernel's placement), the
 * fd io_uring_setup is about to return, then the new instance's inode
 * (every fd and mapping of that inode is the rebuild's: temporary or
 * final), the registered ring fds it takes in the threads, the /dev/null
 * a buffer ring's head is moved with, and
 * liburing's copies as a rebase moves them. A rollback
 * takes away only what still is as the rebuild left it: a placeholder at
 * exactly its range, a copy holding the moved value, fds and mappings of
 * the instance's own inode (io_uring gives each instance an inode of its
 * own). The same rollback undoes a failed rebuild in the run. */
#define _GNU_SOURCE
#include "uring/rebuild/rebuild.h"
#include "base/base.h"
#include "target/target.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define MAGIC 0x6c6e726a67727561ull /* "aurgjrnl" */
#define URING_PATH "anon_inode:[io_uring]"

static int put(uring_new *n, size_t off, const void *v, size_t len, aiotk_err *err)
{
	return aiotk_poke(n->t, n->j_at + off, v, len, err);
}

#define PUT(n, field, err) put(n, offsetof(uring_journal, field), &(n)->j.field, \
			       sizeof((n)->j.field), err)

int uring_journal_open(uring_new *n, size_t scratch, aiotk_err *err)
{
	n->j_len = URING_JOURNAL_HEAD + aiotk_page_round(scratch ? scratch : 1);
	if (n->j_len > AIOTK_URING_JOURNAL_STRIDE) {
		uint64_t need = n->j_len;
		n->j_len = 0;
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0, "its registration table needs a %llu-byte "
				  "journal, more than a journal slot's %llu; nothing was changed",
				  (unsigned long long)need, (unsigned long long)AIOTK_URING_JOURNAL_STRIDE);
	}
	long r = aiotk_sys(n->t, SYS_mmap, (long)n->j_at, (long)n->j_len,
			   PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			   -1, 0);
	if (aiotk_sys_failed(r) || (uint64_t)r != n->j_at) {
		if (!aiotk_sys_failed(r))
			aiotk_sys(n->t, SYS_munmap, r, (long)n->j_len, 0, 0, 0, 0);
		n->j_len = 0;
		return aiotk_fail(err, AIOTK_EOCCUPIED, aiotk_sys_failed(r) ? (int)-r : EEXIST,
				  "process %d: no room for aiotk's io_uring journal at 0x%llx (%s); "
				  "nothing was changed", n->t->pid,
				  (unsigned long long)n->j_at,
				  strerror(aiotk_sys_failed(r) ? (int)-r : EEXIST));
	}
	memset(&n->j, 0, sizeof(n->j));
	n->j.magic = MAGIC;
	n->j.pending_fd = -1, n->j.nullfd = -1;
	int rc = PUT(n, nullfd, err);
	return rc ? rc : PUT(n, magic, err);
}

int uring_journal_ranges(uring_new *n, int fills, const uint64_t *addr, const uint64_t *len,
			 size_t count, aiotk_err *err)
{
	uint64_t (*r)[2] = fills ? n->j.fills : n->j.holds;
	size_t max = fills ? URING_JOURNAL_FILLS : URING_JOURNAL_HOLDS;
	if (count > max)
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0, "more than %zu ranges to journal", max);
	for (size_t i = 0; i < count; i++)
		r[i][0] = addr[i], r[i][1] = len[i];
	size_t off = fills ? offsetof(uring_journal, fills) : offsetof(uring_journal, holds);
	int rc = count ? put(n, off, r, count * sizeof(*r), err) : 0;
	if (fills) {
		n->j.nfills = (uint32_t)count;
		return rc ? rc : PUT(n, nfills, err);
	}
	n->j.nholds = (uint32_t)count;
	return rc ? rc : PUT(n, nholds, err);
}

/* "/proc/PID/what", or this process's (/proc/self) for pid 0. */
static void proc_path(char *buf, size_t len, int pid, const char *what)
{
	if (pid)
		snprintf(buf, len, "/proc/%d/%s", pid, what);
	else
		snprintf(buf, len, "/proc/self/%s", what);
}

static void fd_path(char *buf, size_t len, int pid, int fd)
{
	char what[24];
	snprintf(what, sizeof(what), "fd/%d", fd);
	proc_path(buf, len, pid, what);
}

/* The inode of process pid's fd (stat through /proc, from outside). */
static uint64_t fd_inode(int pid, int fd)
{
	char path[64];
	struct stat st;
	fd_path(path, sizeof(path), pid, fd);
	return stat(path, &st) ? 0 : (uint64_t)st.st_ino;
}

/* The lowest fd process pid has free: the one io_uring_setup will
 * return while it is stopped. */
static int lowest_free(aiotk_target *t)
{
	char path[64];
	for (int fd = 0;; fd++) {
		fd_path(path, sizeof(path), t->pid, fd);
		if (access(path, F_OK) && errno == ENOENT)
			return fd;
	}
}

int uring_journal_setup_next(uring_new *n, aiotk_err *err)
{
	n->j.pending_fd = lowest_free(n->t);
	return PUT(n, pending_fd, err);
}

int uring_journal_instance(uring_new *n, aiotk_err *err)
{
	n->j.ino = fd_inode(n->t->pid, n->fd);
	if (!n->j.ino)
		return aiotk_fail(err, AIOTK_ESYS, errno, "process %d: the new io_uring fd %d cannot "
				  "be looked at in /proc: %s", n->t->pid, n->fd, strerror(errno));
	return PUT(n, ino, err);
}

int uring_journal_copies(uring_new *n, const uint64_t *at, const uint32_t (*moved)[2],
			 unsigned count, uint32_t shift, aiotk_err *err)
{
	for (unsigned i = 0; i < count; i++) {
		n->j.copies[i].at = at[i];
		memcpy(n->j.copies[i].moved, moved[i], sizeof(moved[i]));
	}
	n->j.shift = shift;
	int rc = count ? put(n, offsetof(uring_journal, copies), n->j.copies,
			     count * sizeof(n->j.copies[0]), err) : 0;
	if (!rc)
		rc = PUT(n, shift, err);
	n->j.ncopies = count;
	return rc ? rc : PUT(n, ncopies, err);
}

int uring_journal_ringfd(uring_new *n, int tid, uint32_t index, aiotk_err *err)
{
	uint32_t k = n->j.nringfds;
	if (k >= URING_JOURNAL_RINGFDS)
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0, "more than %d ring fds to journal",
				  URING_JOURNAL_RINGFDS);
	n->j.ringfds[k].tid = tid, n->j.ringfds[k].index = index;
	int rc = put(n, offsetof(uring_journal, ringfds) + k * sizeof(n->j.ringfds[0]), &n->j.ringfds[k],
		     sizeof(n->j.ringfds[0]), err);
	n->j.nringfds = k + 1;
	return rc ? rc : PUT(n, nringfds, err);
}

/* next: the fd openat is about to give; else none (closed). */
int uring_journal_nullfd(uring_new *n, int next, aiotk_err *err)
{
	n->j.nullfd = next ? lowest_free(n->t) : -1;
	return PUT(n, nullfd, err);
}

/* ---- the rollback ------------------------------------------------------ */

/* What a rollback could not take away: how many steps failed, the first
 * named (what, where, why); every other step is still taken. */
void uring_miss(uring_missed *m, int e, const char *what, uint64_t at)
{
	if (m->n++)
		return;
	m->errno_ = e;
	snprintf(m->first, sizeof(m->first), "%s 0x%llx: %s", what, (unsigned long long)at, strerror(e));
}

void uring_sys_missed(uring_missed *m, long r, const char *what, uint64_t at)
{
	if (aiotk_sys_failed(r))
		uring_miss(m, (int)-r, what, at);
}

/* liburing's copies put back where they hold what the rebase wrote. */
static void unmove(aiotk_target *t, const uring_journal *j, uring_missed *m)
{
	for (unsigned i = 0; i < j->ncopies && i < AIOTK_URING_MAX_COPIES; i++) {
		uint32_t c[2];
		aiotk_err e;
		uint64_t at = j->copies[i].at + URING_SQE_HEAD_OFF;
		if (aiotk_peek(t, at, c, sizeof(c), NULL) || c[0] != j->copies[i].moved[0] ||
		    c[1] != j->copies[i].moved[1])
			continue;
		c[0] += j->shift, c[1] += j->shift;
		if (aiotk_poke(t, at, c, sizeof(c), &e))
			uring_miss(m, e.errno_, "liburing's copy of the queue heads, not put back, at", at);
	}
}

/* Whether any mapping of process pid is of inode ino's io_uring; with
 * unmap (where failures go), each is unmapped. */
static int inode_mapped(aiotk_target *t, uint64_t ino, uring_missed *unmap)
{
	char path[64], line[512];
	proc_path(path, sizeof(path), t->pid, "maps");
	FILE *f = fopen(path, "r");
	uint64_t found[16][2];
	size_t nf = 0;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long long s, e, i;
		if (strstr(line, URING_PATH) && sscanf(line, "%llx-%llx %*s %*s %*s %llu", &s, &e, &i) == 3 &&
		    i == ino && nf < 16)
			found[nf][0] = s, found[nf++][1] = e - s;
	}
	if (f)
		fclose(f);
	for (size_t k = 0; unmap && k < nf; k++)
		uring_sys_missed(unmap, aiotk_sys(t, SYS_munmap, (long)found[k][0], (long)found[k][1], 0, 0, 0, 0),
			   "a mapping of the rebuilt io_uring, not unmapped, at", found[k][0]);
	return nf > 0;
}

static int is_uring_fd(int pid, int fd)
{
	char path[64], link[64] = "";
	fd_path(path, sizeof(path), pid, fd);
	ssize_t len = readlink(path, link, sizeof(link) - 1);
	return len > 0 && !strncmp(link, URING_PATH, strlen(URING_PATH));
}

/* Every fd of the instance closed. Before its inode was journalled, the
 * fd io_uring_setup was about to return, if it holds an io_uring that
 * nothing maps (the rebuild maps its instance only after journalling its
 * inode; a program maps its own at once). */
static void close_fds(aiotk_target *t, const uring_journal *j, uring_missed *m)
{
	if (!j->ino) {
		int fd = j->pending_fd;
		if (fd >= 0 && is_uring_fd(t->pid, fd) && !inode_mapped(t, fd_inode(t->pid, fd), NULL))
			uring_sys_missed(m, aiotk_sys(t, SYS_close, fd, 0, 0, 0, 0, 0),
				   "the rebuilt io_uring's fd, not closed: fd", (uint64_t)fd);
		return;
	}
	char dir[64];
	proc_path(dir, sizeof(dir), t->pid, "fd");
	int fds[64];
	size_t nfds = 0;
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.' && nfds < 64 && fd_inode(t->pid, atoi(e->d_name)) == j->ino)
			fds[nfds++] = atoi(e->d_name);
	if (d)
		closedir(d);
	for (size_t i = 0; i < nfds; i++)
		uring_sys_missed(m, aiotk_sys(t, SYS_close, fds[i], 0, 0, 0, 0, 0),
			   "the rebuilt io_uring's fd, not closed: fd", (uint64_t)fds[i]);
}

/* A placeholder of the rebuild's, at exactly [a, a + len), unmapped. */
static void unhold(aiotk_target *t, uint64_t a, uint64_t len, uring_missed *m)
{
	aiotk_vma v;
	if (len && aiotk_maps_overlap(t->pid, a, len, 0, &v, NULL) == 1 && v.start == a &&
	    v.end == a + len && aiotk_vma_is_placeholder(&v))
		uring_sys_missed(m, aiotk_sys(t, SYS_munmap, (long)a, (long)len, 0, 0, 0, 0),
			   "a placeholder of the rebuild's, not unmapped, at", a);
}

static void rollback(aiotk_target *t, const uring_journal *j, uint64_t j_at, uring_missed *m)
{
	unmove(t, j, m);
	uring_drop_ringfds(t, j, j_at, m); /* each holds the instance: dropped before its fds */
	uring_close_nullfd(t, j, m);
	close_fds(t, j, m);
	if (j->ino)
		inode_mapped(t, j->ino, m);
	for (uint32_t i = 0; i < j->nfills && i < URING_JOURNAL_FILLS; i++)
		unhold(t, j->fills[i][0], j->fills[i][1], m);
	for (uint32_t i = 0; i < j->nholds && i < URING_JOURNAL_HOLDS; i++)
		unhold(t, j->holds[i][0], j->holds[i][1], m);
}

/* rc (err: why) once what m says failed is named: AIOTK_EROLLBACK. */
static int missed_fail(const uring_missed *m, aiotk_target *t, uint64_t j_at, int rc, const char *what,
		       aiotk_err *err)
{
	if (!m->n)
		return rc;
	char why[sizeof(err->msg) + 64];
	if (rc && err)
		snprintf(why, sizeof(why), "%s; undoing it, %u step(s)", err->msg, m->n);
	else
		snprintf(why, sizeof(why), "%u step(s) of %s", m->n, what);
	return aiotk_fail(err, AIOTK_EROLLBACK, m->errno_, "%s failed and what they name stays in process %d "
			  "(its io_uring journal at 0x%llx too: the next restore tries again to take it away), the first: %s",
			  why, t->pid, (unsigned long long)j_at, m->first);
}

static uint64_t slot_at(unsigned k) { return AIOTK_URING_JOURNAL_AT + k * AIOTK_URING_JOURNAL_STRIDE; }

/* The slots whose journal is mapped in t (a private anonymous mapping
 * starting at the slot), as a bit set; -1 (err) if t's maps cannot be
 * read. One read of its maps per journal found. */
static int64_t slots_mapped(aiotk_target *t, aiotk_err *err)
{
	int64_t set = 0;
	uint64_t from = AIOTK_URING_JOURNAL_AT, end = slot_at(AIOTK_URING_JOURNAL_SLOTS);
	while (from < end) {
		aiotk_vma v;
		int rc = aiotk_maps_overlap(t->pid, from, end - from, 0, &v, err);
		if (rc < 0)
			return -1;
		if (rc == 0)
			break;
		uint64_t k = (v.start - AIOTK_URING_JOURNAL_AT) / AIOTK_URING_JOURNAL_STRIDE;
		if (v.start >= from && v.start == slot_at((unsigned)k) && !strcmp(v.perms, "rw-p") && !v.path[0])
			set |= (int64_t)1 << k;
		from = v.end > from ? v.end : from + 1;
	}
	return set;
}

/* A rollback that missed a step keeps the journal: the next aiotk's
 * aiotk_uring_leftovers tries again what is left. So does slot 0's while
 * another slot's journal is there: without it, those would read as a
 * committed restore's, which the next aiotk only unmaps. */
int uring_journal_rollback(uring_new *n, int rc, aiotk_err *err)
{
	uring_missed m = { 0 };
	if (n->j_len)
		rollback(n->t, &n->j, n->j_at, &m);
	int64_t others = n->j_len && n->j_at == AIOTK_URING_JOURNAL_AT ? slots_mapped(n->t, NULL) & ~1ll : 0;
	if (n->j_len && !m.n && !others)
		uring_sys_missed(&m, aiotk_sys(n->t, SYS_munmap, (long)n->j_at, (long)n->j_len, 0, 0, 0, 0),
			   "aiotk's io_uring journal, not unmapped, at", n->j_at);
	n->j_len = 0;
	return missed_fail(&m, n->t, n->j_at, rc, "taking a rebuilt io_uring instance away", err);
}

int uring_journal_commit(uring_new *n, aiotk_err *err)
{
	long r = aiotk_sys(n->t, SYS_munmap, (long)n->j_at, (long)n->j_len, 0, 0, 0, 0);
	if (aiotk_sys_failed(r))
		return aiotk_fail(err, AIOTK_ESYS, (int)-r, "munmap of aiotk's io_uring journal at 0x%llx: %s",
				  (unsigned long long)n->j_at, strerror((int)-r));
	n->j_len = 0;
	return 0;
}

int aiotk_uring_commit(aiotk_target *t, const aiotk_uring_rebuilt *r, size_t n, unsigned *left,
		       aiotk_err *err)
{
	*left = 0;
	for (size_t i = 0; i < n; i++) {
		if (!r[i].journal_len || r[i].journal_at != slot_at((unsigned)i))
			return aiotk_fail(err, AIOTK_EINVAL, 0, "io_uring instance %zu has no journal kept in "
					  "slot %zu; nothing was committed", i, i);
	}
	for (size_t i = 0; i < n; i++) {
		uring_new one = { .t = t, .j_at = r[i].journal_at, .j_len = r[i].journal_len };
		aiotk_err e;
		int rc = uring_journal_commit(&one, i ? &e : err);
		if (rc && !i)
			return rc;
		if (rc && !(*left)++ && err)
			*err = e;
	}
	return 0;
}

/* ---- what a killed aiotk left ------------------------------------------ */

/* The journal in slot k taken away: what it names first unless only
 * unmap (a committed restore's). 0, or the failure naming what stays. */
static int leftover(aiotk_target *t, unsigned k, int only_unmap, unsigned *removed, aiotk_err *err)
{
	aiotk_vma v;
	uint64_t at = slot_at(k);
	int rc = aiotk_maps_overlap(t->pid, at, 1, 0, &v, err);
	if (rc <= 0)
		return rc;
	uring_journal *j = calloc(1, sizeof(*j));
	if (!j)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory reading an io_uring journal");
	rc = aiotk_peek(t, at, j, sizeof(*j), err);
	/* Zero: made, then aiotk died before writing it. Anything else is not
	 * aiotk's: left alone (a rebuild then says the address is taken). */
	if (!rc && (j->magic == MAGIC || j->magic == 0)) {
		uring_missed m = { 0 };
		if (j->magic == MAGIC && !only_unmap)
			rollback(t, j, at, &m);
		long r = m.n ? 0 : aiotk_sys(t, SYS_munmap, (long)v.start, (long)(v.end - v.start), 0, 0, 0, 0);
		if (aiotk_sys_failed(r))
			rc = aiotk_fail(err, AIOTK_ESYS, (int)-r, "munmap of the io_uring journal an interrupted "
					"aiotk left at 0x%llx: %s", (unsigned long long)at, strerror((int)-r));
		else if (!m.n)
			(*removed)++;
		rc = missed_fail(&m, t, at, rc, "taking away what an interrupted aiotk made of an io_uring instance",
				 err);
	}
	free(j);
	return rc;
}

int aiotk_uring_leftovers(aiotk_target *t, unsigned *removed, aiotk_err *err)
{
	*removed = 0;
	int64_t set = slots_mapped(t, err);
	if (set < 0)
		return AIOTK_ESYS;
	/* no slot 0: a committed restore's journals, only unmapped; else the
	 * newest instance first, slot 0's last */
	int committed = !(set & 1);
	for (int k = AIOTK_URING_JOURNAL_SLOTS - 1; k >= 0; k--) {
		if (!(set & ((int64_t)1 << k)))
			continue;
		int rc = leftover(t, (unsigned)k, committed, removed, err);
		if (rc)
			return rc;
	}
	return 0;
}
