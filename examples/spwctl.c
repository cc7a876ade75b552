/* SPDX-License-Identifier: MIT */
/*
 * spwctl: list and watch the spillway groups of this host.
 *
 *   spwctl [OPTIONS] [list [PID]]
 *   spwctl [OPTIONS] show [PID[:FD]]
 *
 * Everything comes from /proc: the fds of every process (readlink of
 * /proc/PID/fd/N names spillway files "anon_inode:[spillway-group]" and
 * "anon_inode:[spillway-ring]") and the counters the module prints in
 * /proc/PID/fdinfo/N. Nothing is borrowed from the server (no
 * pidfd_getfd(2), no ioctl), so watching a production server cannot
 * change it, and no privilege is needed beyond reading /proc: as root
 * every process is seen, otherwise only the caller's own.
 *
 * The fdinfo text is parsed generically ("spw-KEY:\tVALUE" header lines,
 * "spw-member-N:\tkey=value ..." member lines), so keys the module adds
 * later are shown without a new spwctl. spwctl --help is the manual.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/spillway.h>

#define GROUP_LINK	"anon_inode:[spillway-group]"
#define RING_LINK	"anon_inode:[spillway-ring]"
#define LIVE_GROUPS	"/sys/module/spillway/parameters/live_groups"
/* a show header names this many holders, then points at spwctl list */
#define SHOW_HOLDERS	8

static const char usage_text[] =
"Usage: spwctl [-w SECONDS [-c COUNT]] [--json] [list [PID]]\n"
"       spwctl [-w SECONDS [-c COUNT]] [--json] show [PID[:FD]]\n"
"       spwctl --help\n";

static const char help_text[] =
"NAME\n"
"    spwctl - list and watch the spillway accept groups of this host\n"
"\n"
"SYNOPSIS\n"
"    spwctl [-w SECONDS [-c COUNT]] [--json] [list [PID]]\n"
"    spwctl [-w SECONDS [-c COUNT]] [--json] show [PID[:FD]]\n"
"    spwctl -h | --help\n"
"\n"
"DESCRIPTION\n"
"    spwctl finds every spillway group on the host by scanning the open\n"
"    files of every process (/proc/PID/fd) for group fds\n"
"    (anon_inode:[spillway-group]) and ring fds (anon_inode:[spillway-ring]),\n"
"    and reads the counters the module prints in /proc/PID/fdinfo/FD.\n"
"    It never touches the server: no fd is borrowed and no ioctl is made.\n"
"\n"
"    A group is one object in the kernel however many processes hold it\n"
"    (a master and the workers it forked usually all do). spwctl identifies\n"
"    a group by the id the module prints as \"spw-group-id:\" in the\n"
"    fdinfo of its group and ring fds; on a module that does not print one,\n"
"    by the inode of the group file, which every fd of that group shares\n"
"    (dup, fork, SCM_RIGHTS) and no other group has (shown as ino:N; ring\n"
"    fds then cannot be matched to their group and are listed apart).\n"
"\n"
"    Only processes whose /proc/PID/fd the caller may read are seen: run as\n"
"    root to see every group; as another user, your own processes.\n"
"\n"
"COMMANDS\n"
"    list [PID]\n"
"        (the default) One line per process holding a group: the group id,\n"
"        the process id and name, its group fds and ring fds of that group,\n"
"        then, on the group's first line, its member count, members whose\n"
"        ring is open, ring entries and the counters summed over members.\n"
"        With PID, only the groups PID holds (all their holders are shown).\n"
"\n"
"    show [PID[:FD]]\n"
"        Every counter of every member of a group: one line per member with\n"
"        each key=value pair of its \"spw-member-N:\" fdinfo line (keys a\n"
"        newer module adds appear as new columns), a total line, and the\n"
"        group's other \"spw-KEY:\" lines as a header. Without an argument,\n"
"        every group; with PID, the groups PID holds; with PID:FD, the\n"
"        group that FD of PID (a group or a ring fd) belongs to.\n"
"\n"
"OPTIONS\n"
"    -w, --watch SECONDS\n"
"        Repeat every SECONDS (fractions allowed, e.g. 0.5) until\n"
"        interrupted. From the second snapshot on, the monotonic counters\n"
"        (arrived, delivered, spilled_out, spilled_in, dropped, rehomed,\n"
"        stale) are shown as per-second rates over the time since the\n"
"        previous snapshot (column names end in /s); gauges (state,\n"
"        outstanding, pending, and keys spwctl does not know) stay values.\n"
"        A rate is \"-\" for a group new since the previous snapshot, or a\n"
"        counter that went backwards.\n"
"\n"
"    -c, --count COUNT\n"
"        With --watch, stop after COUNT snapshots.\n"
"\n"
"    -j, --json\n"
"        One JSON document per snapshot, on one line, instead of tables.\n"
"\n"
"    -h, --help\n"
"        This text.\n"
"\n"
"OUTPUT\n"
"    list columns: GROUP id; PID; COMM; FDS, the process's fds of the\n"
"    group (- when it holds only rings); RINGS, its ring fds of the group;\n"
"    MEMBERS; OPEN, members whose ring a consumer holds; ENTRIES, CQEs per\n"
"    ring; then the group totals ARRIVED, DELIVERED, SPILLED (spilled_out),\n"
"    DROPPED, REHOMED and OUTST (outstanding, now). Processes are sorted by\n"
"    PID, so the creator (the master) is usually the first line. A process\n"
"    name may hold spaces: scripts should read --json rather than columns.\n"
"    A group no readable process holds the group fd of, kept alive by its\n"
"    ring fds, shows - for its figures: only a group fd's fdinfo has them.\n"
"\n"
"    show columns are the member line's keys; state is shown as new, open\n"
"    or closed. The counters (docs/operations.md, \"Watching it\"):\n"
"        arrived      connections that arrived on this member\n"
"        delivered    CQEs this member's ring posted\n"
"        spilled_out  arrived here, delivered by a sibling's ring\n"
"        spilled_in   arrived at a sibling, delivered by this ring\n"
"        dropped      arrived while every ring was full: reset\n"
"        rehomed      waited for this ring, moved on (closed, stalled)\n"
"        outstanding  now: waiting for this ring, handed over or not\n"
"\n"
"    JSON (both commands): {\"command\", \"time\" (Unix seconds),\n"
"    \"interval\" (seconds since the previous snapshot, or null),\n"
"    \"live_groups\" (groups the module has allocated, null when not loaded),\n"
"    \"unreadable_processes\", \"groups\": [{\"id\", \"id_source\" (\"kernel\"\n"
"    or \"inode\"), \"inode\", \"header\" {KEY: VALUE}, \"open\", \"holders\":\n"
"    [{\"pid\", \"comm\", \"fds\", \"rings\": [{\"fd\", \"member\"}]}],\n"
"    \"totals\" {KEY: N}, \"rates\" {KEY: N per second} (watch, from the\n"
"    second snapshot), and for show \"members\": [{\"member\", KEY: VALUE,\n"
"    \"state_name\", \"rates\"}]}], \"unattributed_rings\": [{\"pid\", \"comm\",\n"
"    \"fd\"}]}. Numeric values are JSON numbers, others strings.\n"
"\n"
"EXAMPLES\n"
"    spwctl                        every group, one line per holder\n"
"    spwctl show 1234              the counters of the groups pid 1234 holds\n"
"    spwctl show 1234:3 -w 1       per-second rates of one group, live\n"
"    spwctl --json list | python3 -m json.tool\n"
"    spwctl -w 5 --json show >> spillway.jsonl\n"
"\n"
"EXIT STATUS\n"
"    0   at least one group matched (in watch mode: in the last snapshot)\n"
"    1   no group matched (no group on the host, PID holds none, PID\n"
"        cannot be read), or /proc could not be read\n"
"    2   usage error\n";

/* ---------------------------------------------------------------- memory */

static void *xrealloc(void *p, size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		goto oom;
	p = realloc(p, n && size ? n * size : 1);
	if (p)
		return p;
oom:
	fputs("spwctl: out of memory\n", stderr);
	exit(1);
}

static char *xstrndup(const char *s, size_t n)
{
	char *d = strndup(s, n);

	if (!d) {
		fputs("spwctl: out of memory\n", stderr);
		exit(1);
	}
	return d;
}

/* ------------------------------------------------------- key=value lists */

struct kv {
	char *key;
	char *val;
	bool num;			/* val is a decimal integer >= 0 */
	unsigned long long u;
};

struct kvs {
	struct kv *v;
	size_t n;
};

static bool parse_u64(const char *s, unsigned long long *u)
{
	char *end;

	if (!isdigit((unsigned char)*s))
		return false;
	errno = 0;
	*u = strtoull(s, &end, 10);
	return !*end && !errno;
}

static void kvs_add(struct kvs *s, const char *k, size_t klen, const char *v,
		    size_t vlen)
{
	struct kv *e;

	s->v = xrealloc(s->v, s->n + 1, sizeof(*s->v));
	e = &s->v[s->n++];
	e->key = xstrndup(k, klen);
	e->val = xstrndup(v, vlen);
	e->num = parse_u64(e->val, &e->u);
}

static const struct kv *kvs_get(const struct kvs *s, const char *key)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->v[i].key, key))
			return &s->v[i];
	return NULL;
}

static void kvs_free(struct kvs *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->v[i].key);
		free(s->v[i].val);
	}
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

/*
 * How a key is summed and watched. Monotonic counters get per-second
 * rates in watch mode; labels are neither summed nor rated. A key the
 * module adds later and this table does not know is summed into the
 * total (per-member numbers are counts far more often than not) but
 * shown as a value, never a rate: a rate of a gauge would be nonsense.
 */
enum key_kind { KEY_GAUGE, KEY_COUNTER, KEY_LABEL };

static enum key_kind key_kind(const char *key)
{
	static const char *const counters[] = {
		"arrived", "delivered", "spilled_out", "spilled_in", "dropped",
		"rehomed", "stale",
	};
	/* member keys that name something: a sum of them means nothing */
	static const char *const labels[] = {
		"state", "policy", "cpu", "member",
	};

	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
		if (!strcmp(key, counters[i]))
			return KEY_COUNTER;
	for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++)
		if (!strcmp(key, labels[i]))
			return KEY_LABEL;
	return KEY_GAUGE;
}

/* A name for a numeric value the uapi header defines, or NULL. */
static const char *value_name(const char *key, const struct kv *e)
{
	static const char *const states[] = {
		[SPW_MEMBER_NEW] = "new",
		[SPW_MEMBER_OPEN] = "open",
		[SPW_MEMBER_CLOSED] = "closed",
		[SPW_MEMBER_VACANT] = "vacant",
	};
	static const char *const policies[] = {
		"default", "origin", "least", "p2c", "cpu",
	};

	if (!e || !e->num)
		return NULL;
	if (!strcmp(key, "state") && e->u < sizeof(states) / sizeof(states[0]))
		return states[e->u];
	if (!strcmp(key, "policy") && e->u < sizeof(policies) / sizeof(policies[0]))
		return policies[e->u];
	return NULL;
}

/* ------------------------------------------------------------- snapshot */

struct member {
	unsigned int idx;
	struct kvs kv;
};

struct ringfd {
	int fd;
	long member;			/* -1: the ring's fdinfo does not say */
};

struct holder {
	pid_t pid;
	char comm[64];
	int *fds;			/* group fds */
	size_t nfds;
	struct ringfd *rings;		/* ring fds of this group */
	size_t nrings;
};

struct group {
	unsigned long long id;
	bool kernel_id;			/* id is spw-group-id, else the inode */
	bool counters;			/* read from a group fd (not ring-only) */
	unsigned long long ino;
	struct kvs hdr;			/* spw-KEY lines, "spw-" stripped */
	struct member *m;
	size_t nm;
	struct kvs tot;			/* numeric member keys summed */
	unsigned int open;		/* members in state SPW_MEMBER_OPEN */
	struct holder *h;
	size_t nh;
};

struct ringrec {
	pid_t pid;
	char comm[64];
	int fd;
	bool has_gid;
	unsigned long long gid;
	long member;
	bool attributed;
};

/* files already read in this snapshot, by inode: forked holders share one */
struct seen {
	dev_t dev;
	ino_t ino;
	bool ring;
	size_t group;			/* group files: index in snap.g */
	bool has_gid;			/* ring files */
	unsigned long long gid;
	long member;
};

struct snap {
	struct timespec mono;
	struct timespec real;
	struct group *g;
	size_t ng;
	struct ringrec *r;
	size_t nr;
	struct seen *seen;
	size_t nseen;
	unsigned int unreadable;	/* processes whose fds we may not read */
	long live_groups;		/* -1: module not loaded */
};

static void snap_free(struct snap *s)
{
	for (size_t i = 0; i < s->ng; i++) {
		struct group *g = &s->g[i];

		kvs_free(&g->hdr);
		kvs_free(&g->tot);
		for (size_t j = 0; j < g->nm; j++)
			kvs_free(&g->m[j].kv);
		free(g->m);
		for (size_t j = 0; j < g->nh; j++) {
			free(g->h[j].fds);
			free(g->h[j].rings);
		}
		free(g->h);
	}
	free(s->g);
	free(s->r);
	free(s->seen);
	memset(s, 0, sizeof(*s));
}

/* The whole of a /proc file; NULL if it cannot be read (gone, EACCES). */
static char *read_file_at(int dirfd, const char *path)
{
	size_t len = 0, cap = 4096;
	char *buf;
	ssize_t n;
	int fd;

	fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	buf = xrealloc(NULL, cap, 1);
	/* a 1024-member group prints ~150 KiB: read until EOF, growing */
	for (;;) {
		if (cap - len < 2048) {
			cap *= 2;
			buf = xrealloc(buf, cap, 1);
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += n;
	}
	close(fd);
	if (n < 0) {
		free(buf);
		return NULL;
	}
	buf[len] = '\0';
	return buf;
}

/*
 * Parse a spillway fdinfo: "spw-member-N:\tk=v k=v" lines into @m,
 * every other "spw-KEY:\tVALUE" line into @hdr, and the generic "ino:"
 * line into @ino (0 when the kernel does not print it).
 */
static void parse_fdinfo(char *text, struct kvs *hdr, struct member **m,
			 size_t *nm, unsigned long long *ino)
{
	char *line, *save = NULL;

	*ino = 0;
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *colon = strchr(line, ':'), *val, *end;
		unsigned long idx;

		if (!colon)
			continue;
		val = colon + 1;
		val += strspn(val, " \t");
		if (!strncmp(line, "ino:", 4)) {
			*ino = strtoull(val, NULL, 10);
			continue;
		}
		if (strncmp(line, "spw-", 4))
			continue;
		if (!strncmp(line, "spw-member-", 11) && m &&
		    isdigit((unsigned char)line[11]) &&
		    (idx = strtoul(line + 11, &end, 10), end == colon)) {
			struct member *mb;
			char *tok, *tsave = NULL;

			*m = xrealloc(*m, *nm + 1, sizeof(**m));
			mb = &(*m)[(*nm)++];
			mb->idx = idx;
			mb->kv.v = NULL;
			mb->kv.n = 0;
			for (tok = strtok_r(val, " \t", &tsave); tok;
			     tok = strtok_r(NULL, " \t", &tsave)) {
				char *eq = strchr(tok, '=');

				if (eq)
					kvs_add(&mb->kv, tok, eq - tok, eq + 1,
						strlen(eq + 1));
			}
			continue;
		}
		end = val + strlen(val);
		while (end > val && isspace((unsigned char)end[-1]))
			end--;
		kvs_add(hdr, line + 4, colon - (line + 4), val, end - val);
	}
}

static struct seen *seen_find(struct snap *s, const struct stat *st)
{
	for (size_t i = 0; i < s->nseen; i++)
		if (s->seen[i].dev == st->st_dev && s->seen[i].ino == st->st_ino)
			return &s->seen[i];
	return NULL;
}

static struct seen *seen_add(struct snap *s, const struct stat *st, bool ring)
{
	struct seen *e;

	s->seen = xrealloc(s->seen, s->nseen + 1, sizeof(*s->seen));
	e = &s->seen[s->nseen++];
	memset(e, 0, sizeof(*e));
	e->dev = st->st_dev;
	e->ino = st->st_ino;
	e->ring = ring;
	e->member = -1;
	return e;
}

static struct group *group_find(struct snap *s, bool kernel_id,
				unsigned long long id)
{
	for (size_t i = 0; i < s->ng; i++)
		if (s->g[i].kernel_id == kernel_id && s->g[i].id == id)
			return &s->g[i];
	return NULL;
}

static struct group *group_new(struct snap *s)
{
	struct group *g;

	s->g = xrealloc(s->g, s->ng + 1, sizeof(*s->g));
	g = &s->g[s->ng++];
	memset(g, 0, sizeof(*g));
	return g;
}

static struct holder *holder_get(struct group *g, pid_t pid, const char *comm)
{
	struct holder *h;

	for (size_t i = 0; i < g->nh; i++)
		if (g->h[i].pid == pid)
			return &g->h[i];
	g->h = xrealloc(g->h, g->nh + 1, sizeof(*g->h));
	h = &g->h[g->nh++];
	memset(h, 0, sizeof(*h));
	h->pid = pid;
	snprintf(h->comm, sizeof(h->comm), "%s", comm);
	return h;
}

/* Read a group file's fdinfo: the index of its group in @s, or -1. */
static long read_group(struct snap *s, int procfd, pid_t pid, int fd,
		       const struct stat *st)
{
	struct member *m = NULL;
	struct kvs hdr = { 0 };
	unsigned long long ino;
	const struct kv *id, *nr;
	struct group *g;
	char path[64];
	size_t nm = 0;
	char *text;

	snprintf(path, sizeof(path), "%d/fdinfo/%d", (int)pid, fd);
	text = read_file_at(procfd, path);
	if (!text)
		return -1;
	parse_fdinfo(text, &hdr, &m, &nm, &ino);
	free(text);
	id = kvs_get(&hdr, "group-id");
	nr = kvs_get(&hdr, "members");
	/*
	 * The fd may have been closed and reused between the stat and the
	 * read: then the fdinfo is another file's (its "ino:" differs, or it
	 * is no group at all) and this fd is skipped for this snapshot.
	 */
	if ((ino && ino != (unsigned long long)st->st_ino) || !nr) {
		kvs_free(&hdr);
		for (size_t i = 0; i < nm; i++)
			kvs_free(&m[i].kv);
		free(m);
		return -1;
	}
	g = id && id->num ? group_find(s, true, id->u) : NULL;
	if (g) {
		/* another file of a group already read: same counters */
		kvs_free(&hdr);
		for (size_t i = 0; i < nm; i++)
			kvs_free(&m[i].kv);
		free(m);
		return g - s->g;
	}
	g = group_new(s);
	g->kernel_id = id && id->num;
	g->id = g->kernel_id ? id->u : (unsigned long long)st->st_ino;
	g->ino = st->st_ino;
	g->counters = true;
	g->m = m;
	g->nm = nm;
	/* the id is the group's name in every output, not a header value */
	if (id) {
		size_t at = id - hdr.v;

		free(hdr.v[at].key);
		free(hdr.v[at].val);
		memmove(&hdr.v[at], &hdr.v[at + 1],
			(hdr.n - at - 1) * sizeof(*hdr.v));
		hdr.n--;
	}
	g->hdr = hdr;
	return g - s->g;
}

static void read_ring(int procfd, pid_t pid, int fd, struct seen *e)
{
	struct kvs hdr = { 0 };
	unsigned long long ino;
	const struct kv *id, *mb;
	char path[64];
	char *text;

	snprintf(path, sizeof(path), "%d/fdinfo/%d", (int)pid, fd);
	text = read_file_at(procfd, path);
	if (!text)
		return;
	parse_fdinfo(text, &hdr, NULL, NULL, &ino);
	free(text);
	id = kvs_get(&hdr, "group-id");
	mb = kvs_get(&hdr, "member");
	if (!ino || ino == (unsigned long long)e->ino) {
		e->has_gid = id && id->num;
		e->gid = e->has_gid ? id->u : 0;
		e->member = mb && mb->num ? (long)mb->u : -1;
	}
	kvs_free(&hdr);
}

/* Length of the valid UTF-8 sequence at @s (RFC 3629), 0 if invalid. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (*s < 0x80)
		return 1;
	if (*s >= 0xc2 && *s <= 0xdf)
		n = 2;
	else if (*s >= 0xe0 && *s <= 0xef)
		n = 3;
	else if (*s >= 0xf0 && *s <= 0xf4)
		n = 4;
	else
		return 0;
	/* no overlong forms, no surrogates, nothing above U+10FFFF */
	if (*s == 0xe0)
		lo = 0xa0;
	else if (*s == 0xed)
		hi = 0x9f;
	else if (*s == 0xf0)
		lo = 0x90;
	else if (*s == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

static void read_comm(int procfd, pid_t pid, char *comm, size_t len)
{
	char path[64], *text, *nl;

	snprintf(path, sizeof(path), "%d/comm", (int)pid);
	text = read_file_at(procfd, path);
	snprintf(comm, len, "%s", text ? text : "?");
	nl = strchr(comm, '\n');
	if (nl)
		*nl = '\0';
	/*
	 * Any process names itself: control bytes (C0, DEL, C1) or broken
	 * UTF-8 printed raw could drive the terminal of the root running
	 * spwctl. Like ps, show them as '?'; valid UTF-8 stays.
	 */
	for (unsigned char *c = (unsigned char *)comm; *c;) {
		size_t n = utf8_len(c);

		if (*c < 0x20 || *c == 0x7f || !n ||
		    (*c == 0xc2 && c[1] < 0xa0)) {
			*c++ = '?';
			continue;
		}
		c += n;
	}
	free(text);
}

/* One process: its spillway fds into @s. */
static void scan_pid(struct snap *s, int procfd, pid_t pid)
{
	char path[64], comm[64] = "";
	struct dirent *d;
	int fdfd;
	DIR *dir;

	snprintf(path, sizeof(path), "%d/fd", (int)pid);
	fdfd = openat(procfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fdfd < 0) {
		if (errno == EACCES || errno == EPERM)
			s->unreadable++;
		return;
	}
	dir = fdopendir(fdfd);
	if (!dir) {
		close(fdfd);
		return;
	}
	while ((d = readdir(dir))) {
		char link[sizeof(GROUP_LINK) + 8];
		struct holder *h;
		struct stat st;
		struct seen *e;
		bool ring;
		ssize_t n;
		int fd;

		if (!isdigit((unsigned char)d->d_name[0]))
			continue;
		fd = atoi(d->d_name);
		n = readlinkat(fdfd, d->d_name, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		if (!strcmp(link, GROUP_LINK))
			ring = false;
		else if (!strcmp(link, RING_LINK))
			ring = true;
		else
			continue;
		/* follows the link: the open file's own inode */
		if (fstatat(fdfd, d->d_name, &st, 0))
			continue;
		if (!*comm)
			read_comm(procfd, pid, comm, sizeof(comm));
		e = seen_find(s, &st);
		if (!ring) {
			long gi;

			if (e && !e->ring) {
				gi = e->group;
			} else {
				gi = read_group(s, procfd, pid, fd, &st);
				if (gi < 0)
					continue;
				seen_add(s, &st, false)->group = gi;
			}
			h = holder_get(&s->g[gi], pid, comm);
			h->fds = xrealloc(h->fds, h->nfds + 1, sizeof(*h->fds));
			h->fds[h->nfds++] = fd;
		} else {
			struct ringrec *r;

			if (!e || !e->ring) {
				e = seen_add(s, &st, true);
				read_ring(procfd, pid, fd, e);
			}
			s->r = xrealloc(s->r, s->nr + 1, sizeof(*s->r));
			r = &s->r[s->nr++];
			memset(r, 0, sizeof(*r));
			r->pid = pid;
			snprintf(r->comm, sizeof(r->comm), "%s", comm);
			r->fd = fd;
			r->has_gid = e->has_gid;
			r->gid = e->gid;
			r->member = e->member;
		}
	}
	closedir(dir);
}

/* qsort() of an empty array: its pointer may be NULL, which qsort may not take */
static void sort(void *base, size_t n, size_t size,
		 int (*cmp)(const void *, const void *))
{
	if (n > 1)
		qsort(base, n, size, cmp);
}

static int cmp_holder(const void *a, const void *b)
{
	const struct holder *x = a, *y = b;

	return (x->pid > y->pid) - (x->pid < y->pid);
}

static int cmp_int(const void *a, const void *b)
{
	return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

static int cmp_ring(const void *a, const void *b)
{
	const struct ringrec *x = a, *y = b;

	if (x->pid != y->pid)
		return (x->pid > y->pid) - (x->pid < y->pid);
	return (x->fd > y->fd) - (x->fd < y->fd);
}

static int cmp_group(const void *a, const void *b)
{
	const struct group *x = a, *y = b;
	pid_t px = x->nh ? x->h[0].pid : 0, py = y->nh ? y->h[0].pid : 0;

	/* kernel ids are assigned in creation order: oldest group first */
	if (x->kernel_id != y->kernel_id)
		return x->kernel_id ? -1 : 1;
	if (x->kernel_id && x->id != y->id)
		return (x->id > y->id) - (x->id < y->id);
	return (px > py) - (px < py);
}

/* After the scan: rings to their groups, totals, order. */
static void snap_finish(struct snap *s)
{
	/* by pid then fd: holders' rings in order, a process's rings adjacent */
	sort(s->r, s->nr, sizeof(*s->r), cmp_ring);
	for (size_t i = 0; i < s->nr; i++) {
		struct ringrec *r = &s->r[i];
		struct holder *h;
		struct group *g;

		if (!r->has_gid)
			continue;
		g = group_find(s, true, r->gid);
		if (!g) {
			/*
			 * The group fd is closed everywhere (or held by a
			 * process we cannot read) but its rings keep the
			 * group alive: list it, without counters.
			 */
			g = group_new(s);
			g->kernel_id = true;
			g->id = r->gid;
		}
		h = holder_get(g, r->pid, r->comm);
		h->rings = xrealloc(h->rings, h->nrings + 1, sizeof(*h->rings));
		h->rings[h->nrings].fd = r->fd;
		h->rings[h->nrings++].member = r->member;
		r->attributed = true;
	}
	for (size_t i = 0; i < s->ng; i++) {
		struct group *g = &s->g[i];

		for (size_t j = 0; j < g->nm; j++) {
			const struct kvs *kv = &g->m[j].kv;

			for (size_t k = 0; k < kv->n; k++) {
				struct kv *t;

				if (!strcmp(kv->v[k].key, "state") && kv->v[k].num &&
				    kv->v[k].u == SPW_MEMBER_OPEN)
					g->open++;
				if (!kv->v[k].num || key_kind(kv->v[k].key) == KEY_LABEL)
					continue;
				t = (struct kv *)kvs_get(&g->tot, kv->v[k].key);
				if (!t) {
					kvs_add(&g->tot, kv->v[k].key,
						strlen(kv->v[k].key), "0", 1);
					t = &g->tot.v[g->tot.n - 1];
				}
				t->u += kv->v[k].u;
			}
		}
		/* the sums were made in ->u; JSON prints ->val */
		for (size_t k = 0; k < g->tot.n; k++) {
			free(g->tot.v[k].val);
			if (asprintf(&g->tot.v[k].val, "%llu", g->tot.v[k].u) < 0) {
				fputs("spwctl: out of memory\n", stderr);
				exit(1);
			}
		}
		for (size_t j = 0; j < g->nh; j++)
			sort(g->h[j].fds, g->h[j].nfds, sizeof(int), cmp_int);
		sort(g->h, g->nh, sizeof(*g->h), cmp_holder);
	}
	sort(s->g, s->ng, sizeof(*s->g), cmp_group);
}

static int snap_take(struct snap *s)
{
	struct dirent *d;
	char *live;
	int procfd;
	DIR *dir;

	memset(s, 0, sizeof(*s));
	clock_gettime(CLOCK_MONOTONIC, &s->mono);
	clock_gettime(CLOCK_REALTIME, &s->real);
	procfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (procfd < 0 || !(dir = fdopendir(dup(procfd)))) {
		perror("spwctl: /proc");
		if (procfd >= 0)
			close(procfd);
		return -1;
	}
	while ((d = readdir(dir)))
		if (isdigit((unsigned char)d->d_name[0]))
			scan_pid(s, procfd, atoi(d->d_name));
	closedir(dir);
	close(procfd);
	live = read_file_at(AT_FDCWD, LIVE_GROUPS);
	s->live_groups = live ? atol(live) : -1;
	free(live);
	snap_finish(s);
	return 0;
}

/* ------------------------------------------------------------ selection */

struct sel {
	enum { SEL_ALL, SEL_PID, SEL_PIDFD } kind;
	pid_t pid;
	int fd;
};

static bool selected(const struct group *g, const struct sel *sel)
{
	if (sel->kind == SEL_ALL)
		return true;
	for (size_t i = 0; i < g->nh; i++) {
		const struct holder *h = &g->h[i];

		if (h->pid != sel->pid)
			continue;
		if (sel->kind == SEL_PID)
			return true;
		for (size_t j = 0; j < h->nfds; j++)
			if (h->fds[j] == sel->fd)
				return true;
		for (size_t j = 0; j < h->nrings; j++)
			if (h->rings[j].fd == sel->fd)
				return true;
	}
	return false;
}

/* ---------------------------------------------------------------- rates */

struct rates {
	const struct snap *prev;	/* NULL: first snapshot, no rates */
	double dt;			/* seconds since prev */
};

static const struct group *prev_group(const struct rates *rt,
				      const struct group *g)
{
	if (!rt->prev)
		return NULL;
	for (size_t i = 0; i < rt->prev->ng; i++) {
		const struct group *p = &rt->prev->g[i];

		/* an inode can be reused by a new group: then ino differs too */
		if (p->kernel_id == g->kernel_id && p->id == g->id &&
		    p->ino == g->ino)
			return p;
	}
	return NULL;
}

static const struct kvs *prev_member(const struct group *p, unsigned int idx)
{
	for (size_t i = 0; p && i < p->nm; i++)
		if (p->m[i].idx == idx)
			return &p->m[i].kv;
	return NULL;
}

/* The per-second rate of @e against the same key in @prev; false if none. */
static bool rate_of(const struct rates *rt, const struct kvs *prev,
		    const struct kv *e, double *rate)
{
	const struct kv *p;

	if (!rt->prev || !prev || !e || !e->num || key_kind(e->key) != KEY_COUNTER)
		return false;
	p = kvs_get(prev, e->key);
	if (!p || !p->num || p->u > e->u || rt->dt <= 0)
		return false;
	*rate = (double)(e->u - p->u) / rt->dt;
	return true;
}

/* A monotonic counter shown as a rate in this snapshot. */
static bool rated(const struct rates *rt, const char *key)
{
	return rt->prev && key_kind(key) == KEY_COUNTER;
}

/* ---------------------------------------------------------------- table */

/* Cells of a text table, aligned when printed. */
struct table {
	size_t ncol;
	size_t nrow;
	char **cell;
	bool *left;			/* per column: left-aligned */
};

static void table_init(struct table *t, size_t ncol)
{
	memset(t, 0, sizeof(*t));
	t->ncol = ncol;
	t->left = xrealloc(NULL, ncol, sizeof(*t->left));
	memset(t->left, 0, ncol * sizeof(*t->left));
}

static void table_row(struct table *t)
{
	t->cell = xrealloc(t->cell, (t->nrow + 1) * t->ncol, sizeof(*t->cell));
	memset(&t->cell[t->nrow * t->ncol], 0, t->ncol * sizeof(*t->cell));
	t->nrow++;
}

static void table_set(struct table *t, size_t col, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void table_set(struct table *t, size_t col, const char *fmt, ...)
{
	char **c = &t->cell[(t->nrow - 1) * t->ncol + col];
	va_list ap;

	free(*c);
	va_start(ap, fmt);
	if (vasprintf(c, fmt, ap) < 0) {
		fputs("spwctl: out of memory\n", stderr);
		exit(1);
	}
	va_end(ap);
}

static void table_free(struct table *t)
{
	for (size_t i = 0; i < t->nrow * t->ncol; i++)
		free(t->cell[i]);
	free(t->cell);
	free(t->left);
}

/* Terminal columns of a UTF-8 string: continuation bytes take none. */
static size_t text_width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

static void table_print(struct table *t, const char *indent)
{
	size_t *w = xrealloc(NULL, t->ncol, sizeof(*w));

	for (size_t c = 0; c < t->ncol; c++) {
		w[c] = 0;
		for (size_t r = 0; r < t->nrow; r++) {
			const char *s = t->cell[r * t->ncol + c];

			if (s && text_width(s) > w[c])
				w[c] = text_width(s);
		}
	}
	for (size_t r = 0; r < t->nrow; r++) {
		size_t last = t->ncol;

		/* no trailing blanks: continuation rows end early */
		while (last && !t->cell[r * t->ncol + last - 1])
			last--;
		fputs(indent, stdout);
		for (size_t c = 0; c < last; c++) {
			const char *s = t->cell[r * t->ncol + c];
			size_t pad = w[c] - (s ? text_width(s) : 0);

			if (c)
				fputs("  ", stdout);
			if (!t->left[c])
				printf("%*s", (int)pad, "");
			fputs(s ? s : "", stdout);
			if (t->left[c] && c + 1 < last)
				printf("%*s", (int)pad, "");
		}
		putchar('\n');
	}
	table_free(t);
	free(w);
}

static void group_name(const struct group *g, char *buf, size_t len)
{
	if (g->kernel_id)
		snprintf(buf, len, "%llu", g->id);
	else
		snprintf(buf, len, "ino:%llu", g->id);
}

static void join_fds(const struct holder *h, char *buf, size_t len)
{
	size_t at = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < h->nfds && at < len; i++)
		at += snprintf(buf + at, len - at, "%s%d", i ? "," : "", h->fds[i]);
	if (!h->nfds)
		snprintf(buf, len, "-");
}

/* A total or its rate into the current cell. */
static void set_counter(struct table *t, size_t col, const struct rates *rt,
			const struct group *g, const struct group *p,
			const char *key)
{
	const struct kv *e = kvs_get(&g->tot, key);
	double rate;

	if (!g->counters)
		table_set(t, col, "-");
	else if (rated(rt, key) && rate_of(rt, p ? &p->tot : NULL, e, &rate))
		table_set(t, col, "%.1f", rate);
	else if (rated(rt, key))
		table_set(t, col, "-");
	else if (e && e->num)
		table_set(t, col, "%llu", e->u);
	else
		table_set(t, col, "-");	/* a module without this counter */
}

static void print_list(const struct snap *s, const struct sel *sel,
		       const struct rates *rt)
{
	static const char *const cols[] = {
		"GROUP", "PID", "COMM", "FDS", "RINGS", "MEMBERS", "OPEN",
		"ENTRIES", "ARRIVED", "DELIVERED", "SPILLED", "DROPPED",
		"REHOMED", "OUTST",
	};
	/* the counter columns (from ARRIVED on) and the keys they show */
	static const char *const keys[] = {
		"arrived", "delivered", "spilled_out", "dropped", "rehomed",
		"outstanding",
	};
	const size_t first_counter = 8;
	struct table t;

	table_init(&t, sizeof(cols) / sizeof(cols[0]));
	t.left[0] = t.left[2] = t.left[3] = true;
	table_row(&t);
	for (size_t c = 0; c < t.ncol; c++)
		if (c >= first_counter && rated(rt, keys[c - first_counter]))
			table_set(&t, c, "%s/s", cols[c]);
		else
			table_set(&t, c, "%s", cols[c]);
	for (size_t i = 0; i < s->ng; i++) {
		const struct group *g = &s->g[i], *p = prev_group(rt, g);
		char name[32], fds[256];

		if (!selected(g, sel))
			continue;
		group_name(g, name, sizeof(name));
		for (size_t j = 0; j < g->nh; j++) {
			const struct holder *h = &g->h[j];
			const struct kv *e;

			table_row(&t);
			table_set(&t, 0, "%s", name);
			table_set(&t, 1, "%d", (int)h->pid);
			table_set(&t, 2, "%s", h->comm);
			join_fds(h, fds, sizeof(fds));
			table_set(&t, 3, "%s", fds);
			table_set(&t, 4, "%zu", h->nrings);
			/* the group's figures once, on its first holder's line */
			if (j)
				continue;
			e = kvs_get(&g->hdr, "members");
			table_set(&t, 5, "%s", e ? e->val : "-");
			if (g->counters)
				table_set(&t, 6, "%u", g->open);
			else
				table_set(&t, 6, "-");
			e = kvs_get(&g->hdr, "ring-entries");
			table_set(&t, 7, "%s", e ? e->val : "-");
			for (size_t c = first_counter; c < t.ncol; c++)
				set_counter(&t, c, rt, g, p, keys[c - first_counter]);
		}
	}
	if (t.nrow > 1)
		table_print(&t, "");
	else
		table_free(&t);
	/* rings of a kernel whose ring fdinfo names no group: one line a process */
	pid_t line = 0;			/* the process whose line is open */

	for (size_t i = 0; i < s->nr; i++) {
		const struct ringrec *r = &s->r[i];

		if (r->attributed || (sel->kind != SEL_ALL && r->pid != sel->pid))
			continue;
			/* sorted by pid: a process's rings are adjacent */
		if (r->pid == line) {
			printf(",%d", r->fd);
			continue;
		}
		if (line)
			putchar('\n');
		else
			printf("ring fds whose group the module does not name (no spw-group-id in their fdinfo):\n");
		printf("  %d (%s) ring fd %d", (int)r->pid, r->comm, r->fd);
		line = r->pid;
	}
	if (line)
		putchar('\n');
}

static void print_holders(const struct group *g)
{
	fputs("  held by:", stdout);
	for (size_t j = 0; j < g->nh && j < SHOW_HOLDERS; j++) {
		const struct holder *h = &g->h[j];
		char fds[256];

		join_fds(h, fds, sizeof(fds));
		printf("%s %d (%s)", j ? ";" : "", (int)h->pid, h->comm);
		if (h->nfds)
			printf(" fd %s", fds);
		for (size_t k = 0; k < h->nrings; k++) {
			printf("%s%d", k ? "," : " ring ", h->rings[k].fd);
			if (h->rings[k].member >= 0)
				printf(" (member %ld)", h->rings[k].member);
		}
	}
	if (g->nh > SHOW_HOLDERS)
		printf("; and %zu more (spwctl list)", g->nh - SHOW_HOLDERS);
	putchar('\n');
}

static void print_show(const struct snap *s, const struct sel *sel,
		       const struct rates *rt)
{
	bool first = true;

	for (size_t i = 0; i < s->ng; i++) {
		const struct group *g = &s->g[i], *p = prev_group(rt, g);
		const char **keys = NULL;
		size_t nkeys = 0;
		char name[32];
		struct table t;

		if (!selected(g, sel))
			continue;
		if (!first)
			putchar('\n');
		first = false;
		group_name(g, name, sizeof(name));
		printf("group %s", name);
		for (size_t k = 0; k < g->hdr.n; k++) {
			const struct kv *e = &g->hdr.v[k];
			const char *vn = value_name(e->key, e);
			double rate;

			printf("  %s %s", e->key, e->val);
			if (vn)
				printf(" (%s)", vn);
			if (rate_of(rt, p ? &p->hdr : NULL, e, &rate))
				printf(" (%.1f/s)", rate);
		}
		putchar('\n');
		print_holders(g);
		if (!g->counters) {
			puts("  no counters: no readable process holds the group fd, only ring fds");
			continue;
		}
		/* columns: every member key, in the order the module prints them */
		for (size_t j = 0; j < g->nm; j++)
			for (size_t k = 0; k < g->m[j].kv.n; k++) {
				const char *key = g->m[j].kv.v[k].key;
				size_t x;

				for (x = 0; x < nkeys && strcmp(keys[x], key); x++)
					;
				if (x == nkeys) {
					keys = xrealloc(keys, nkeys + 1, sizeof(*keys));
					keys[nkeys++] = key;
				}
			}
		table_init(&t, nkeys + 1);
		t.left[0] = true;
		table_row(&t);
		table_set(&t, 0, "member");
		for (size_t c = 0; c < nkeys; c++) {
			table_set(&t, c + 1, "%s%s", keys[c], rated(rt, keys[c]) ? "/s" : "");
			if (!strcmp(keys[c], "state"))
				t.left[c + 1] = true;
		}
		for (size_t j = 0; j < g->nm; j++) {
			const struct kvs *kv = &g->m[j].kv;
			const struct kvs *pk = prev_member(p, g->m[j].idx);

			table_row(&t);
			table_set(&t, 0, "%u", g->m[j].idx);
			for (size_t c = 0; c < nkeys; c++) {
				const struct kv *e = kvs_get(kv, keys[c]);
				const char *vn = value_name(keys[c], e);
				double rate;

				if (!e)
					table_set(&t, c + 1, "-");
				else if (rated(rt, keys[c]) && rate_of(rt, pk, e, &rate))
					table_set(&t, c + 1, "%.1f", rate);
				else if (rated(rt, keys[c]))
					table_set(&t, c + 1, "-");
				else
					table_set(&t, c + 1, "%s", vn ? vn : e->val);
			}
		}
		table_row(&t);
		table_set(&t, 0, "total");
		for (size_t c = 0; c < nkeys; c++) {
			const struct kv *e = kvs_get(&g->tot, keys[c]);
			double rate;

			if (!strcmp(keys[c], "state"))
				table_set(&t, c + 1, "%u/%zu open", g->open, g->nm);
			else if (!e)
				continue;
			else if (rated(rt, keys[c]) && rate_of(rt, p ? &p->tot : NULL, e, &rate))
				table_set(&t, c + 1, "%.1f", rate);
			else if (rated(rt, keys[c]))
				table_set(&t, c + 1, "-");
			else
				table_set(&t, c + 1, "%llu", e->u);
		}
		table_print(&t, "  ");
		free(keys);
	}
}

/* ----------------------------------------------------------------- JSON */

static void json_str(const char *str)
{
	const unsigned char *c = (const unsigned char *)str;

	putchar('"');
	while (*c) {
		size_t n = utf8_len(c);

		if (*c == '"' || *c == '\\') {
			printf("\\%c", *c);
			c++;
		} else if (*c < 0x20 || *c == 0x7f || !n) {
			/*
			 * comm is any bytes a process chose: a byte that is
			 * not UTF-8 becomes the code point of the same value,
			 * so the document always decodes
			 */
			printf("\\u%04x", *c);
			c++;
		} else {
			fwrite(c, 1, n, stdout);
			c += n;
		}
	}
	putchar('"');
}

static void json_val(const struct kv *e)
{
	const char *s = e->val + (e->val[0] == '-');

	/* integers as numbers (negative ones too), anything else a string */
	if (*s && strspn(s, "0123456789") == strlen(s) && (s[0] != '0' || !s[1]))
		fputs(e->val, stdout);
	else
		json_str(e->val);
}

/* "key":value pairs of @kv, a ", " before each but the very first */
static void json_pairs(const struct kvs *kv, bool names, bool *first)
{
	for (size_t k = 0; k < kv->n; k++) {
		const char *vn = names ? value_name(kv->v[k].key, &kv->v[k]) : NULL;

		printf("%s", *first ? "" : ", ");
		*first = false;
		json_str(kv->v[k].key);
		putchar(':');
		json_val(&kv->v[k]);
		/* "state":1 stays a number for programs; the name is for people */
		if (vn) {
			printf(", \"%s_name\":", kv->v[k].key);
			json_str(vn);
		}
	}
}

/* {"counter": per-second rate, ...} against the previous snapshot */
static void json_rates(const struct kvs *kv, const struct kvs *prev,
		       const struct rates *rt)
{
	bool first = true;

	putchar('{');
	for (size_t k = 0; k < kv->n; k++) {
		double rate;

		if (!rate_of(rt, prev, &kv->v[k], &rate))
			continue;
		printf("%s", first ? "" : ", ");
		json_str(kv->v[k].key);
		printf(":%.3f", rate);
		first = false;
	}
	putchar('}');
}

static void print_json(const char *cmd, const struct snap *s,
		       const struct sel *sel, const struct rates *rt)
{
	bool first = true;

	printf("{\"command\":\"%s\", \"time\":%lld.%03ld, \"interval\":", cmd,
	       (long long)s->real.tv_sec, s->real.tv_nsec / 1000000);
	if (rt->prev)
		printf("%.3f", rt->dt);
	else
		printf("null");
	printf(", \"live_groups\":");
	if (s->live_groups >= 0)
		printf("%ld", s->live_groups);
	else
		printf("null");
	printf(", \"unreadable_processes\":%u, \"groups\":[", s->unreadable);
	for (size_t i = 0; i < s->ng; i++) {
		const struct group *g = &s->g[i], *p = prev_group(rt, g);
		bool first_kv;

		if (!selected(g, sel))
			continue;
		printf("%s{\"id\":%llu, \"id_source\":\"%s\", \"inode\":", first ? "" : ", ",
		       g->id, g->kernel_id ? "kernel" : "inode");
		first = false;
		if (g->ino)
			printf("%llu", g->ino);
		else
			printf("null");
		printf(", \"header\":{");
		for (size_t k = 0; k < g->hdr.n; k++) {
			printf("%s", k ? ", " : "");
			json_str(g->hdr.v[k].key);
			putchar(':');
			json_val(&g->hdr.v[k]);
		}
		printf("}, \"open\":");
		if (g->counters)
			printf("%u", g->open);
		else
			printf("null");
		printf(", \"holders\":[");
		for (size_t j = 0; j < g->nh; j++) {
			const struct holder *h = &g->h[j];

			printf("%s{\"pid\":%d, \"comm\":", j ? ", " : "", (int)h->pid);
			json_str(h->comm);
			printf(", \"fds\":[");
			for (size_t k = 0; k < h->nfds; k++)
				printf("%s%d", k ? "," : "", h->fds[k]);
			printf("], \"rings\":[");
			for (size_t k = 0; k < h->nrings; k++) {
				printf("%s{\"fd\":%d, \"member\":", k ? ", " : "",
				       h->rings[k].fd);
				if (h->rings[k].member >= 0)
					printf("%ld}", h->rings[k].member);
				else
					printf("null}");
			}
			printf("]}");
		}
		printf("], \"totals\":{");
		first_kv = true;
		json_pairs(&g->tot, false, &first_kv);
		putchar('}');
		if (rt->prev) {
			printf(", \"rates\":");
			json_rates(&g->tot, p ? &p->tot : NULL, rt);
		}
		if (!strcmp(cmd, "show")) {
			printf(", \"members\":[");
			for (size_t j = 0; j < g->nm; j++) {
				printf("%s{\"member\":%u", j ? ", " : "", g->m[j].idx);
				first_kv = false;
				json_pairs(&g->m[j].kv, true, &first_kv);
				if (rt->prev) {
					printf(", \"rates\":");
					json_rates(&g->m[j].kv, prev_member(p, g->m[j].idx), rt);
				}
				putchar('}');
			}
			putchar(']');
		}
		putchar('}');
	}
	printf("], \"unattributed_rings\":[");
	first = true;
	for (size_t i = 0; i < s->nr; i++) {
		const struct ringrec *r = &s->r[i];

		if (r->attributed || (sel->kind != SEL_ALL && r->pid != sel->pid))
			continue;
		printf("%s{\"pid\":%d, \"comm\":", first ? "" : ", ", (int)r->pid);
		json_str(r->comm);
		printf(", \"fd\":%d}", r->fd);
		first = false;
	}
	printf("]}\n");
}

/* ----------------------------------------------------------------- main */

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage(const char *fmt, ...)
{
	va_list ap;

	fputs("spwctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%s(spwctl --help for the manual)\n", usage_text);
	return 2;
}

static bool parse_pid_fd(const char *arg, struct sel *sel, bool fd_allowed)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno || end == arg || v <= 0 || v > INT_MAX)
		return false;
	sel->pid = v;
	sel->kind = SEL_PID;
	if (!*end)
		return true;
	if (*end != ':' || !fd_allowed)
		return false;
	arg = end + 1;
	v = strtol(arg, &end, 10);
	if (errno || end == arg || *end || v < 0 || v > INT_MAX)
		return false;
	sel->fd = v;
	sel->kind = SEL_PIDFD;
	return true;
}

static size_t count_selected(const struct snap *s, const struct sel *sel)
{
	size_t n = 0;

	for (size_t i = 0; i < s->ng; i++)
		n += selected(&s->g[i], sel);
	return n;
}

/* Ring fds of no known group that list prints for @sel. */
static size_t count_unattributed(const struct snap *s, const struct sel *sel)
{
	size_t n = 0;

	for (size_t i = 0; i < s->nr; i++)
		n += !s->r[i].attributed &&
		     (sel->kind == SEL_ALL || s->r[i].pid == sel->pid);
	return n;
}

/* Why nothing matched, on stderr: the table output's last word. */
static void explain_none(const struct snap *s, const struct sel *sel)
{
	char path[64];

	for (size_t i = 0; i < s->nr && sel->kind != SEL_ALL; i++) {
		const struct ringrec *r = &s->r[i];

		if (r->attributed || r->pid != sel->pid ||
		    (sel->kind == SEL_PIDFD && r->fd != sel->fd))
			continue;
		fprintf(stderr, "spwctl: process %d holds ring fd %d, but this module does not say of which group (no spw-group-id in its fdinfo); spwctl list shows the group fds\n",
			(int)r->pid, r->fd);
		return;
	}
	if (sel->kind != SEL_ALL) {
		snprintf(path, sizeof(path), "/proc/%d/fd", (int)sel->pid);
		if (access(path, F_OK) && errno == ENOENT)
			fprintf(stderr, "spwctl: no process %d\n", (int)sel->pid);
		else if (access(path, R_OK | X_OK))
			fprintf(stderr, "spwctl: cannot read %s: %s (run as root or as its user)\n",
				path, strerror(errno));
		else if (sel->kind == SEL_PID)
			fprintf(stderr, "spwctl: process %d holds no spillway group or ring fd\n",
				(int)sel->pid);
		else
			fprintf(stderr, "spwctl: fd %d of process %d is no spillway group or ring fd\n",
				sel->fd, (int)sel->pid);
		return;
	}
	if (s->live_groups < 0)
		fputs("spwctl: no spillway groups (the spillway module is not loaded)\n", stderr);
	else if (s->live_groups > 0 && geteuid())
		fprintf(stderr, "spwctl: the module holds %ld group(s), none in a process you may read (run as root)\n",
			s->live_groups);
	else
		fputs("spwctl: no spillway groups\n", stderr);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "watch", required_argument, NULL, 'w' },
		{ "count", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct snap cur, prev = { 0 };
	struct sel sel = { .kind = SEL_ALL };
	bool json = false, have_prev = false, warned = false;
	double interval = 0;
	long count = 0, taken = 0;
	const char *cmd = "list";
	struct timespec next, now;
	size_t matched = 0;
	int opt;

	while ((opt = getopt_long(argc, argv, "w:c:jh", opts, NULL)) != -1) {
		char *end;

		switch (opt) {
		case 'w':
			errno = 0;
			interval = strtod(optarg, &end);
			/* an hour is plenty; below 10 ms the scan itself dominates */
			if (errno || end == optarg || *end || !(interval >= 0.01) ||
			    interval > 3600)
				return usage("--watch wants seconds between 0.01 and 3600, not '%s'", optarg);
			break;
		case 'c':
			errno = 0;
			count = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || count <= 0)
				return usage("--count wants a positive number, not '%s'", optarg);
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			fputs(help_text, stdout);
			return 0;
		default:
			return usage("unknown option");
		}
	}
	if (count && !interval)
		return usage("--count only makes sense with --watch");
	if (optind < argc) {
		cmd = argv[optind++];
		if (strcmp(cmd, "list") && strcmp(cmd, "show"))
			return usage("unknown command '%s'", cmd);
	}
	if (optind < argc && !parse_pid_fd(argv[optind++], &sel, !strcmp(cmd, "show")))
		return usage("'%s' is not a %s", argv[optind - 1],
			     strcmp(cmd, "show") ? "PID" : "PID or PID:FD");
	if (optind < argc)
		return usage("unexpected '%s'", argv[optind]);

	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		struct rates rt = { NULL, 0 };

		if (snap_take(&cur))
			return 1;
		if (have_prev) {
			rt.prev = &prev;
			rt.dt = (cur.mono.tv_sec - prev.mono.tv_sec) +
				(cur.mono.tv_nsec - prev.mono.tv_nsec) / 1e9;
		}
		matched = count_selected(&cur, &sel);
		if (json) {
			print_json(cmd, &cur, &sel, &rt);
		} else {
			if (interval) {
				char when[64];
				struct tm tm;

				localtime_r(&cur.real.tv_sec, &tm);
				strftime(when, sizeof(when), "%F %T", &tm);
				printf("%s--- %s", taken ? "\n" : "", when);
				if (rt.prev)
					printf("  (rates over %.2f s)", rt.dt);
				putchar('\n');
			}
			if (!strcmp(cmd, "show"))
				print_show(&cur, &sel, &rt);
			else if (matched || count_unattributed(&cur, &sel))
				print_list(&cur, &sel, &rt);
			/* watching, an empty snapshot still says something */
			if (!matched && interval)
				puts("no group matched");
		}
		/* on stderr, and once: in watch mode it would repeat every snapshot */
		if (!matched && !warned)
			explain_none(&cur, &sel);
		if (!json && cur.unreadable && sel.kind == SEL_ALL && !warned && geteuid())
			fprintf(stderr, "spwctl: the fds of %u processes (not yours) could not be read; run as root to see every group\n",
				cur.unreadable);
		warned = true;
		/* a pipe reader (jq, a log) sees each snapshot as it is taken */
		fflush(stdout);
		taken++;
		if (!interval || (count && taken >= count))
			break;
		if (have_prev)
			snap_free(&prev);
		prev = cur;
		have_prev = true;
		/* absolute deadlines: the scan's own time does not drift the period */
		next.tv_sec += (time_t)interval;
		next.tv_nsec += (long)((interval - (time_t)interval) * 1e9);
		if (next.tv_nsec >= 1000000000L) {
			next.tv_sec++;
			next.tv_nsec -= 1000000000L;
		}
		/*
		 * Behind (a scan slower than the period, spwctl stopped): start
		 * afresh from now rather than fire the missed snapshots at once.
		 */
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > next.tv_sec ||
		    (now.tv_sec == next.tv_sec && now.tv_nsec > next.tv_nsec))
			next = now;
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
			;
	}
	snap_free(&cur);
	if (have_prev)
		snap_free(&prev);
	return matched ? 0 : 1;
}
