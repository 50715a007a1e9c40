/* The kernel-view viewer: the BPF object both views run (kview.bpf.c and
 * uring_view.bpf.c linked into one skeleton, kview_bpf), loaded here or
 * opened from a pin an earlier command left under a bpffs directory; the
 * iterator links the views make from its programs (kviewer_link).
 *
 * Loading costs about 0.25 s: libbpf's work (kallsyms for two ksyms, the
 * kernel's BTF for CO-RE) and the verifier's (135 ms for the io_uring
 * view); opening a pin, about 1 ms (docs/KERNEL-FACTS.md, "Loading the
 * kernel view"). A pin is a directory "aiotk-VERSION-HASH" (HASH: of the
 * BPF object's bytes, so a different build never uses it) holding the two
 * programs and the map user space writes (`firsts`), mode 0700; it is made
 * under another name and renamed into place, so a reader never sees half
 * of one. */
#define _GNU_SOURCE
#include "kview/kview.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BTF_PATH "/sys/kernel/btf/vmlinux"
#define BPF_FS_MAGIC_ 0xcafe4a11 /* linux/magic.h's BPF_FS_MAGIC */

/* A bpffs directory: the one kind a pin can be made in. */
static int is_bpffs(const char *dir)
{
	struct statfs s;
	return statfs(dir, &s) == 0 && (unsigned long)s.f_type == BPF_FS_MAGIC_;
}

/* bpffs mounted at dir, an empty directory (a mount would hide what it
 * holds), mode 0700 as systemd mounts /sys/fs/bpf. 0 or -1 with errno. */
static int mount_bpffs(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	struct dirent *e;
	int empty = 1;
	while (empty && (e = readdir(d)))
		empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
	closedir(d);
	if (!empty) {
		errno = ENOTEMPTY;
		return -1;
	}
	return mount("bpf", dir, "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700");
}

/* Each entry of directory path unlinked, then the directory: a pin holds
 * only pinned objects. 0 or -1 with errno. */
static int remove_pin_dir(const char *path)
{
	DIR *d = opendir(path);
	if (!d)
		return -1;
	struct dirent *e;
	int e_no = 0;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) && !e_no)
			e_no = errno;
	}
	closedir(d);
	if (rmdir(path))
		return -1;
	errno = e_no;
	return e_no ? -1 : 0;
}

/* A pin of this build (with all, of any build) or a leftover of making
 * one. */
static int ours(const char *entry, const char *name, int all)
{
	size_t n = strlen(name);
	if (all)
		return !strncmp(entry, "aiotk-", 6);
	return !strcmp(entry, name) ||
	       (!strncmp(entry, name, n) && !strncmp(entry + n, "-tmp-", 5));
}

int aiotk_kview_unpin(const char *pin_dir, int all, int *removed, aiotk_err *err)
{
	*removed = 0;
	const char *name = aiotk_kview_pin_name();
	if (!*name || !is_bpffs(pin_dir))
		return 0;
	DIR *d = opendir(pin_dir);
	if (!d)
		return aiotk_fail(err, AIOTK_ESYS, errno, "%s: %s", pin_dir, strerror(errno));
	int rc = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!ours(e->d_name, name, all))
			continue;
		char path[512];
		snprintf(path, sizeof(path), "%s/%s", pin_dir, e->d_name);
		if (remove_pin_dir(path)) {
			if (!rc)
				rc = aiotk_fail(err, AIOTK_ESYS, errno,
						"removing the kernel view's pin %s: %s (it needs root)",
						path, strerror(errno));
		} else {
			(*removed)++;
		}
	}
	closedir(d);
	return rc;
}

#ifdef AIOTK_HAVE_BPF
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/capability.h>

#include "kview.skel.h"

/* What a pin holds: each program, and the map user space writes. */
static const char *const PIN_PROG[2] = { "aio", "uring" };
static const char *const PROG_NAME[2] = { "kview", "uring_view" };
#define PIN_FIRSTS "firsts"

const char *aiotk_kview_pin_name(void)
{
	static char name[64];
	if (!name[0]) {
		size_t sz = 0;
		const unsigned char *p = kview_bpf__elf_bytes(&sz);
		uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, 64 bits */
		for (size_t i = 0; i < sz; i++)
			h = (h ^ p[i]) * 0x100000001b3ull;
		/* bpffs refuses dots in names (reserved): 0.1.0 is 0_1_0. */
		int n = snprintf(name, sizeof(name), "aiotk-%s-%016llx", AIOTK_VERSION,
				 (unsigned long long)h);
		for (int i = 0; i < n; i++)
			name[i] = name[i] == '.' ? '_' : name[i];
	}
	return name;
}

/* The core never prints; libbpf's own messages are dropped (its hook is
 * process-wide: aiotk.h lists it as such) and its errno is turned into a
 * sentence. */
static int quiet(enum libbpf_print_level l, const char *f, va_list a)
{
	(void)l, (void)f, (void)a;
	return 0;
}

static int load_error(int e, aiotk_err *err)
{
	if (e == EPERM || e == EACCES)
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, e,
				  "loading the kernel-view BPF program was refused (%s): it needs CAP_BPF and CAP_PERFMON (run aiotk as root)",
				  strerror(e));
	return aiotk_fail(err, AIOTK_EUNSUPPORTED, e,
			  "this kernel refused the kernel-view BPF program (%s): it needs BPF task iterators, bpf_loop and per-CPU map lookups (Linux 6.1 or later)",
			  strerror(e));
}

static void close_fds(aiotk_kviewer *v)
{
	for (int i = 0; i < 2; i++)
		if (v->prog[i] >= 0)
			close(v->prog[i]);
	if (v->firsts >= 0)
		close(v->firsts);
	v->prog[0] = v->prog[1] = v->firsts = -1;
}

/* Program fd is the one named i of a pin, and (the AIO program) uses the
 * map whose id is firsts_id. */
static int pinned_prog_ok(int fd, int i, uint32_t firsts_id, uint32_t *id)
{
	uint32_t maps[8] = { 0 };
	struct bpf_prog_info info;
	uint32_t len = sizeof(info);
	memset(&info, 0, sizeof(info));
	info.nr_map_ids = 8;
	info.map_ids = (uint64_t)(uintptr_t)maps;
	if (bpf_obj_get_info_by_fd(fd, &info, &len) || info.type != BPF_PROG_TYPE_TRACING ||
	    strcmp(info.name, PROG_NAME[i]))
		return 0;
	*id = info.id;
	if (i != KVIEWER_AIO)
		return 1;
	for (uint32_t m = 0; m < info.nr_map_ids && m < 8; m++)
		if (maps[m] == firsts_id)
			return 1;
	return 0;
}

/* v's programs from the pin at path: 0, or -1 with errno (ENOENT: no pin
 * there; EPERM: one that is not this build's or not only root's). */
static int open_pin(aiotk_kviewer *v, const char *path)
{
	struct stat st;
	if (lstat(path, &st))
		return -1;
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077)) {
		errno = EPERM;
		return -1;
	}
	char p[512];
	snprintf(p, sizeof(p), "%s/" PIN_FIRSTS, path);
	v->firsts = bpf_obj_get(p);
	struct bpf_map_info mi;
	uint32_t len = sizeof(mi);
	memset(&mi, 0, sizeof(mi));
	if (v->firsts < 0 || bpf_obj_get_info_by_fd(v->firsts, &mi, &len) ||
	    mi.type != BPF_MAP_TYPE_LRU_HASH || mi.key_size != 4 || mi.value_size != 4)
		goto foreign;
	for (int i = 0; i < 2; i++) {
		snprintf(p, sizeof(p), "%s/%s", path, PIN_PROG[i]);
		v->prog[i] = bpf_obj_get(p);
		if (v->prog[i] < 0 || !pinned_prog_ok(v->prog[i], i, mi.id, &v->info.prog_id[i]))
			goto foreign;
	}
	return 0;
foreign:
	close_fds(v);
	errno = EPERM;
	return -1;
}

/* The loaded programs pinned at dir/name: made as dir/name-tmp-PID and
 * renamed, so that no reader sees part of a pin. 0, or -1 with errno
 * (EEXIST/ENOTEMPTY: another command pinned first; its pin serves the
 * next ones, this one's load serves this one). */
static int make_pin(aiotk_kviewer *v, const char *path)
{
	char tmp[512], p[600];
	snprintf(tmp, sizeof(tmp), "%s-tmp-%d", path, (int)getpid());
	remove_pin_dir(tmp); /* a killed process's of this PID, if any */
	if (mkdir(tmp, 0700))
		return -1;
	int rc = 0;
	for (int i = 0; !rc && i < 2; i++) {
		snprintf(p, sizeof(p), "%s/%s", tmp, PIN_PROG[i]);
		rc = bpf_obj_pin(v->prog[i], p);
	}
	if (!rc) {
		snprintf(p, sizeof(p), "%s/" PIN_FIRSTS, tmp);
		rc = bpf_obj_pin(v->firsts, p);
	}
	if (!rc)
		rc = rename(tmp, path);
	if (rc) {
		int e = errno;
		remove_pin_dir(tmp);
		errno = e;
		return -1;
	}
	return 0;
}

static int load(aiotk_kviewer *v, aiotk_err *err)
{
	v->skel = kview_bpf__open();
	if (!v->skel)
		return load_error(errno, err);
	if (kview_bpf__load(v->skel)) {
		int e = errno;
		kview_bpf__destroy(v->skel);
		v->skel = NULL;
		return load_error(e, err);
	}
	/* The skeleton's fds stay the skeleton's: the viewer's are dups. */
	v->prog[KVIEWER_AIO] = dup(bpf_program__fd(v->skel->progs.kview));
	v->prog[KVIEWER_URING] = dup(bpf_program__fd(v->skel->progs.uring_view));
	v->firsts = dup(bpf_map__fd(v->skel->maps.firsts));
	if (v->prog[0] < 0 || v->prog[1] < 0 || v->firsts < 0)
		return aiotk_fail(err, AIOTK_ESYS, errno, "kernel view: %s", strerror(errno));
	for (int i = 0; i < 2; i++) {
		struct bpf_prog_info info;
		uint32_t len = sizeof(info);
		memset(&info, 0, sizeof(info));
		if (!bpf_obj_get_info_by_fd(v->prog[i], &info, &len))
			v->info.prog_id[i] = info.id;
	}
	return 0;
}

/* CAP_BPF and CAP_PERFMON in effect: what loading the programs needs. A
 * pin opened without them would lend a process (root's uid with fewer
 * capabilities, say) what it could not load itself. */
static int may_load(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	memset(d, 0, sizeof(d));
	if (syscall(SYS_capget, &h, d))
		return 0;
	uint64_t eff = d[0].effective | (uint64_t)d[1].effective << 32;
	return (eff >> 39 & 1) && (eff >> 38 & 1); /* CAP_BPF, CAP_PERFMON */
}

/* What use_pin found where the pin belongs. */
enum pin_found { PIN_OPENED, PIN_MISSING, PIN_UNUSABLE, PIN_LEFT };

/* The programs from the pin o asks for; otherwise why not in
 * v->info.pin_errno, and whether a pin may be made (MISSING) or must
 * replace an unusable one (UNUSABLE) once the programs are loaded. */
static enum pin_found use_pin(aiotk_kviewer *v, const aiotk_kviewer_opts *o)
{
	const char *dir = o->pin_dir;
	snprintf(v->info.pin_path, sizeof(v->info.pin_path), "%s/%s", dir,
		 aiotk_kview_pin_name());
	if (!may_load()) {
		v->info.pin_errno = EPERM;
		return PIN_LEFT;
	}
	if (!is_bpffs(dir)) {
		if (!o->mount || mount_bpffs(dir)) {
			v->info.no_bpffs = 1;
			v->info.pin_errno = o->mount ? errno : ENOTSUP;
			return PIN_LEFT;
		}
		v->info.mounted = 1;
	}
	if (!open_pin(v, v->info.pin_path)) {
		v->info.from_pin = 1;
		return PIN_OPENED;
	}
	v->info.pin_errno = errno;
	return errno == ENOENT ? PIN_MISSING : errno == EPERM ? PIN_UNUSABLE : PIN_LEFT;
}

/* The loaded programs pinned where use_pin found none, or an unusable
 * one: a pin of another owner, of wider mode or holding other programs
 * (this build's name is this build's to use). */
static void keep_pin(aiotk_kviewer *v, enum pin_found found)
{
	const char *path = v->info.pin_path;
	if (found == PIN_LEFT)
		return;
	if (found == PIN_UNUSABLE) {
		if (remove_pin_dir(path) && errno != ENOENT)
			return; /* pin_errno says why it stays unused */
		v->info.replaced = 1;
	}
	if (make_pin(v, path))
		v->info.pin_errno = errno;
	else
		v->info.pinned = 1, v->info.pin_errno = 0;
}

int aiotk_kviewer_open_opts(aiotk_kviewer **out, const aiotk_kviewer_opts *o,
			    aiotk_err *err)
{
	uint64_t t0 = aiotk_now_ns();
	*out = NULL;
	if (access(BTF_PATH, R_OK))
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, errno,
				  "this kernel has no BTF (%s: %s; it needs CONFIG_DEBUG_INFO_BTF)",
				  BTF_PATH, strerror(errno));
	libbpf_set_print(quiet);
	aiotk_kviewer *v = calloc(1, sizeof(*v));
	if (!v)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	v->prog[0] = v->prog[1] = v->firsts = v->link = -1;
	enum pin_found found = o && o->pin_dir ? use_pin(v, o) : PIN_LEFT;
	if (found != PIN_OPENED) {
		int rc = load(v, err);
		if (rc) {
			aiotk_kviewer_close(v);
			return rc;
		}
		keep_pin(v, found);
	}
	v->info.open_ns = aiotk_now_ns() - t0;
	*out = v;
	return 0;
}

int aiotk_kviewer_open(aiotk_kviewer **out, aiotk_err *err)
{
	return aiotk_kviewer_open_opts(out, NULL, err);
}

void aiotk_kviewer_info_get(const aiotk_kviewer *v, aiotk_kviewer_info *out)
{
	*out = v->info;
}

int kviewer_link(aiotk_kviewer *v, enum kviewer_prog p, int id, int by_pid)
{
	union bpf_iter_link_info li;
	memset(&li, 0, sizeof(li));
	if (by_pid)
		li.task.pid = (uint32_t)id;
	else
		li.task.tid = (uint32_t)id;
	LIBBPF_OPTS(bpf_link_create_opts, o, .iter_info = &li, .iter_info_len = sizeof(li));
	int fd = bpf_link_create(v->prog[p], 0, BPF_TRACE_ITER, &o);
	if (fd < 0 && fd > -4096)
		errno = -fd;
	return fd < 0 ? -1 : fd;
}

int kviewer_set_first(aiotk_kviewer *v, uint32_t reader, uint32_t first)
{
	int rc = first ? bpf_map_update_elem(v->firsts, &reader, &first, BPF_ANY)
		       : bpf_map_delete_elem(v->firsts, &reader);
	if (rc && !first && errno == ENOENT)
		rc = 0;
	return rc ? -errno : 0;
}

void aiotk_kviewer_close(aiotk_kviewer *v)
{
	if (!v)
		return;
	if (v->link >= 0)
		close(v->link);
	if (v->reader && v->reader_first)
		kviewer_set_first(v, v->reader, 0);
	close_fds(v);
	if (v->skel)
		kview_bpf__destroy(v->skel);
	free(v);
}

#else /* !AIOTK_HAVE_BPF */

const char *aiotk_kview_pin_name(void)
{
	return "";
}

int aiotk_kviewer_open_opts(aiotk_kviewer **out, const aiotk_kviewer_opts *o,
			    aiotk_err *err)
{
	(void)o;
	*out = NULL;
	return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0,
			  "this aiotk was built without BPF (clang, bpftool or libbpf-dev were missing at build time)");
}

int aiotk_kviewer_open(aiotk_kviewer **out, aiotk_err *err)
{
	return aiotk_kviewer_open_opts(out, NULL, err);
}

void aiotk_kviewer_info_get(const aiotk_kviewer *v, aiotk_kviewer_info *out)
{
	(void)v;
	memset(out, 0, sizeof(*out));
}

void aiotk_kviewer_close(aiotk_kviewer *v) { (void)v; }

#endif
