/*
 * memtouch: a memory workload that counts every access it makes.
 *
 * The testbed scores a page placement by what its accesses would cost, so it
 * needs ground truth: how often each part of memory was read and written in
 * each interval. This program makes a known, seeded mix of accesses to named
 * regions and reports exactly what it did. It is built statically on the host
 * and runs unchanged in the guest.
 *
 *   build: gcc -std=c11 -O2 -static -ffp-contract=off -Wall -Wextra -Werror -o memtouch memtouch.c
 *   run:   memtouch [--check | [--linger] [--barrier]] [SPEC | -]   (the spec from stdin without an
 *          argument or with "-"; --check only validates it; --linger keeps the regions mapped after the
 *          last epoch until a signal ends the program, so an observer that is behind can still look;
 *          --barrier holds the program after each epoch line but the last until it gets SIGUSR1)
 *
 * INPUT: written by testbed/memtouch.py. One statement per line, a keyword and
 * key=value pairs; '#' starts a comment.
 *   memtouch version=1                              first statement
 *   run seed=U64 epoch_us=N slices=N                 before the regions
 *   region name=NAME size=BYTES chunk=BYTES pattern=uniform|zipf|sequential|chase
 *   phase epochs=N                                   then one access line per region:
 *   access region=NAME count=N [write=F] [exponent=F] [hot_offset=PAGES] [hot_drift=PAGES] [stride=BYTES]
 * count is accesses per epoch, write the fraction of them that are stores.
 * exponent, hot_offset and hot_drift apply to zipf regions, stride to
 * sequential ones.
 *
 * OUTPUT: one JSON object per line on stdout, flushed line by line.
 *   {"type":"regions","version":1,"pid":P,"seed":S,"epoch_us":N,"slices":N,"page_size":4096,
 *    "regions":[{"name":"a","pattern":"zipf","address":A,"size":B,"chunk":C,"pages":N,"chunks":N},...]}
 *   {"type":"epoch","epoch":E,"phase":P,"start_us":T,"end_us":T,"busy_us":T,"wait_us":T,"late":false,
 *    "reads":[[N,...],...],"writes":[[N,...],...]}
 *   {"type":"done","epochs":N,"late_epochs":N}
 * reads and writes hold one list per region (spec order) of counts per chunk
 * (chunk i covers region bytes [i*chunk, (i+1)*chunk)). Times are
 * CLOCK_MONOTONIC microseconds; busy_us is the time spent accessing; late
 * means the epoch's accesses took longer than the epoch (none are dropped:
 * the next epoch then starts at once). The setup writes are not counted.
 * wait_us is how long the program was held at the barrier before the epoch
 * began: start_us is the previous epoch's end_us plus wait_us (for the first
 * epoch, the wait after the regions line; 0 without --barrier).
 * Errors: one line on stderr; exit 2 for a bad spec, 1 for a failure at run time.
 *
 * ACCESSES: one 8-byte load or store. Whether an access is a store is decided
 * by an error-diffusion counter, so the write fraction holds exactly over
 * time and to within one access per epoch. Patterns:
 *   uniform     a random cache line of the region;
 *   zipf        page of rank k (k = 0, 1, ...) with probability ~ 1/(k+1)^exponent,
 *               then a random line in it; rank k is page (k + hot) mod pages,
 *               where hot = hot_offset + hot_drift * (epochs since the phase began);
 *   sequential  from where it last stopped, stride bytes at a time, wrapping;
 *   chase       word 0 of each line holds the index of the next line, a random
 *               cycle through all lines; an access follows it and loads or
 *               stores word 1 of the line it reaches (one counted access per line visited).
 * Each epoch is cut into slices paced in time, so that samplers (DAMON) see
 * the accesses spread over the epoch rather than in a burst at its start.
 *
 * BARRIER: with --barrier, after printing the regions line and after each
 * epoch line but the last, the program waits for one SIGUSR1 (the release)
 * before the next epoch, so an observer that starts watching and placing
 * before epoch 0, and acts on every epoch (migrates pages), never has its
 * changes land in the middle of an epoch, however slow it is. Each epoch is
 * then paced, and judged late, from the moment of release. SIGUSR1 is blocked
 * from the start: a release sent before the program reaches the barrier is
 * kept pending and lets it pass at once (only one can be pending, so send one
 * per epoch line). SIGTERM and SIGINT end the program while it waits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdnoreturn.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { PAGE_SHIFT = 12, LINE_SHIFT = 6, WORDS_PER_LINE = 8 };
enum { MAX_REGIONS = 64, MAX_NAME = 64, MAX_LINE = 4096, MAX_KEYS = 12 };
#define PAGE_SIZE (UINT64_C(1) << PAGE_SHIFT)
#define HUGE_PAGE (UINT64_C(2) << 20)
#define MAX_REGION_SIZE (UINT64_C(64) << 30)
#define MAX_COUNT (UINT64_C(1) << 40)
#define WRITE_ONE (UINT64_C(1) << 32) /* write fractions are kept in 2^-32 units */
#define ALIAS_BITS 26                 /* precision of the zipf alias thresholds */
#define ALIAS_FULL (UINT64_C(1) << ALIAS_BITS)

enum pattern { UNIFORM, ZIPF, SEQUENTIAL, CHASE, PATTERN_COUNT };
static const char *const pattern_names[PATTERN_COUNT] = {"uniform", "zipf", "sequential", "chase"};

/* What a region does in each epoch of one phase. */
struct plan {
	uint64_t count;
	uint64_t write_step;
	double exponent;
	uint64_t hot_offset, hot_drift; /* pages, pages per epoch */
	uint64_t stride;
	const uint64_t *alias; /* zipf: (alias index << 32) | threshold, per rank */
	bool given;
};

/* Everything the access loop needs, copied into a local while it runs so
 * the compiler can keep it in registers despite the volatile stores. */
struct walk {
	uint8_t *base;
	uint64_t *reads, *writes;
	unsigned chunk_shift;
	uint64_t size, pages, lines;
	uint64_t write_step, stride, hot_page;
	const uint64_t *alias;
	uint64_t rng, write_credit, cursor; /* carried across epochs */
};

struct region {
	char name[MAX_NAME];
	enum pattern pattern;
	uint64_t chunk, chunks;
	struct walk walk;
};

struct phase {
	uint64_t epochs;
	struct plan plans[MAX_REGIONS];
};

struct spec {
	uint64_t seed, epoch_us, slices;
	size_t region_count, phase_count;
	struct region regions[MAX_REGIONS];
	struct phase *phases;
};

static noreturn void vfail(int code, const char *format, va_list args)
{
	vfprintf(stderr, format, args);
	fputc('\n', stderr);
	exit(code);
}

static noreturn void die(const char *format, ...)
{
	fputs("memtouch: ", stderr);
	va_list args;
	va_start(args, format);
	vfail(1, format, args);
}

static noreturn void bad_spec(unsigned line, const char *format, ...)
{
	fprintf(stderr, "memtouch: bad spec: line %u: ", line);
	va_list args;
	va_start(args, format);
	vfail(2, format, args);
}

static void *allocate(size_t count, size_t size)
{
	void *memory = calloc(count, size);
	if (!memory)
		die("out of memory (%zu x %zu bytes)", count, size);
	return memory;
}

/* ---- random numbers and deterministic zipf weights ---- */

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* A uniform number in [0, n) from 64 random bits (multiply-high, no division). */
static inline uint64_t below(uint64_t random, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)random * n) >> 64);
}

/* libm's pow/exp/log pick FMA or plain code by CPU at run time and may differ
 * in the last bit; these use only IEEE arithmetic, so every machine builds the
 * same zipf table. x >= 1 here. */
static double ln_at_least_one(double x)
{
	uint64_t bits;
	memcpy(&bits, &x, sizeof bits);
	int exponent = (int)((bits >> 52) & 0x7ff) - 1023;
	bits = (bits & ((UINT64_C(1) << 52) - 1)) | (UINT64_C(1023) << 52);
	double mantissa;
	memcpy(&mantissa, &bits, sizeof mantissa);
	/* ln m = 2 atanh z with z = (m-1)/(m+1) < 1/3: the series converges fast. */
	double z = (mantissa - 1) / (mantissa + 1), z2 = z * z, term = z, sum = 0;
	for (int k = 0; k < 24; k++, term *= z2)
		sum += term / (2 * k + 1);
	return 2 * sum + exponent * 0.69314718055994530942;
}

static double exp_not_positive(double y)
{
	int halvings = 0;
	while (y < -0.5) { /* exp(y) = exp(y/2)^2 keeps the series argument small */
		y /= 2;
		halvings++;
	}
	double term = 1, sum = 1;
	for (int k = 1; k < 20; k++) {
		term *= y / k;
		sum += term;
	}
	while (halvings-- > 0)
		sum *= sum;
	return sum;
}

/* Vose's alias table for P(rank k) ~ (k+1)^-exponent: O(1) per sample. */
static const uint64_t *zipf_alias_table(uint64_t pages, double exponent)
{
	double *weight = allocate(pages, sizeof *weight), total = 0;
	uint32_t *small = allocate(pages, sizeof *small), *large = allocate(pages, sizeof *large);
	uint64_t *table = allocate(pages, sizeof *table);
	for (uint64_t k = 0; k < pages; k++)
		total += weight[k] = exp_not_positive(-exponent * ln_at_least_one((double)(k + 1)));
	size_t small_count = 0, large_count = 0;
	for (uint64_t k = 0; k < pages; k++) {
		weight[k] *= (double)pages / total;
		if (weight[k] < 1)
			small[small_count++] = (uint32_t)k;
		else
			large[large_count++] = (uint32_t)k;
	}
	while (small_count && large_count) {
		uint32_t lower = small[--small_count], upper = large[--large_count];
		table[lower] = (uint64_t)upper << 32 | (uint64_t)(weight[lower] * (double)ALIAS_FULL);
		weight[upper] -= 1 - weight[lower];
		if (weight[upper] < 1)
			small[small_count++] = upper;
		else
			large[large_count++] = upper;
	}
	/* What is left has probability 1 up to rounding: a full threshold never takes the alias. */
	while (small_count)
		table[small[--small_count]] = ALIAS_FULL;
	while (large_count)
		table[large[--large_count]] = ALIAS_FULL;
	free(weight);
	free(small);
	free(large);
	return table;
}

/* ---- reading the spec ---- */

struct statement {
	unsigned line;
	const char *keyword;
	size_t count;
	char *keys[MAX_KEYS], *values[MAX_KEYS];
	bool used[MAX_KEYS];
};

/* Splits one line into keyword and key=value pairs; false for a blank line. */
static bool split_statement(char *text, unsigned line, struct statement *statement)
{
	char *comment = strchr(text, '#'), *save = NULL;
	if (comment)
		*comment = '\0';
	*statement = (struct statement){.line = line};
	statement->keyword = strtok_r(text, " \t\r\n", &save);
	if (!statement->keyword)
		return false;
	for (char *token; (token = strtok_r(NULL, " \t\r\n", &save));) {
		char *equals = strchr(token, '=');
		if (!equals || equals == token || !equals[1])
			bad_spec(line, "expected key=value, got '%s'", token);
		*equals = '\0';
		for (size_t i = 0; i < statement->count; i++)
			if (!strcmp(statement->keys[i], token))
				bad_spec(line, "key '%s' given twice", token);
		if (statement->count == MAX_KEYS)
			bad_spec(line, "too many keys (at most %d)", MAX_KEYS);
		statement->keys[statement->count] = token;
		statement->values[statement->count++] = equals + 1;
	}
	return true;
}

static const char *optional_key(struct statement *statement, const char *key)
{
	for (size_t i = 0; i < statement->count; i++)
		if (!strcmp(statement->keys[i], key)) {
			statement->used[i] = true;
			return statement->values[i];
		}
	return NULL;
}

static const char *required_key(struct statement *statement, const char *key)
{
	const char *value = optional_key(statement, key);
	if (!value)
		bad_spec(statement->line, "'%s' needs key '%s'", statement->keyword, key);
	return value;
}

static void check_all_keys_used(const struct statement *statement)
{
	for (size_t i = 0; i < statement->count; i++)
		if (!statement->used[i])
			bad_spec(statement->line, "unexpected key '%s' for '%s'", statement->keys[i], statement->keyword);
}

static uint64_t to_u64(const struct statement *statement, const char *key, const char *text, uint64_t min,
		       uint64_t max)
{
	char *end;
	errno = 0;
	unsigned long long value = strtoull(text, &end, 10);
	if (text[0] < '0' || text[0] > '9' || *end || errno || value < min || value > max)
		bad_spec(statement->line, "key '%s' must be a whole number from %" PRIu64 " to %" PRIu64 ", got '%s'",
			 key, min, max, text);
	return value;
}

static uint64_t u64_key(struct statement *statement, const char *key, uint64_t min, uint64_t max)
{
	return to_u64(statement, key, required_key(statement, key), min, max);
}

static uint64_t optional_u64_key(struct statement *statement, const char *key, uint64_t fallback, uint64_t min,
				 uint64_t max)
{
	const char *text = optional_key(statement, key);
	return text ? to_u64(statement, key, text, min, max) : fallback;
}

static double optional_double_key(struct statement *statement, const char *key, double fallback, double min,
				  double max)
{
	const char *text = optional_key(statement, key);
	if (!text)
		return fallback;
	char *end;
	double value = strtod(text, &end);
	if (end == text || *end || !(value >= min && value <= max))
		bad_spec(statement->line, "key '%s' must be a number from %g to %g, got '%s'", key, min, max, text);
	return value;
}

static struct region *find_region(struct spec *spec, const char *name)
{
	for (size_t i = 0; i < spec->region_count; i++)
		if (!strcmp(spec->regions[i].name, name))
			return &spec->regions[i];
	return NULL;
}

static void read_run(struct spec *spec, struct statement *statement)
{
	if (spec->epoch_us)
		bad_spec(statement->line, "'run' given twice");
	spec->seed = u64_key(statement, "seed", 0, UINT64_MAX);
	spec->epoch_us = u64_key(statement, "epoch_us", 1000, UINT64_C(3600000000));
	spec->slices = u64_key(statement, "slices", 1, spec->epoch_us < 100000 ? spec->epoch_us : 100000);
}

static void read_region(struct spec *spec, struct statement *statement)
{
	if (!spec->epoch_us || spec->phase_count)
		bad_spec(statement->line, "'region' must come after 'run' and before the first 'phase'");
	if (spec->region_count == MAX_REGIONS)
		bad_spec(statement->line, "too many regions (at most %d)", MAX_REGIONS);
	const char *name = required_key(statement, "name");
	if (strlen(name) >= MAX_NAME || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
					       strlen(name))
		bad_spec(statement->line, "region name '%s' must be 1-%d letters, digits, '_', '.' or '-'", name,
			 MAX_NAME - 1);
	if (find_region(spec, name))
		bad_spec(statement->line, "region '%s' defined twice", name);
	struct region *region = &spec->regions[spec->region_count++];
	strcpy(region->name, name);
	struct walk *walk = &region->walk;
	walk->size = u64_key(statement, "size", PAGE_SIZE, MAX_REGION_SIZE);
	region->chunk = u64_key(statement, "chunk", PAGE_SIZE, MAX_REGION_SIZE);
	if (walk->size % PAGE_SIZE || region->chunk & (region->chunk - 1))
		bad_spec(statement->line, "size must be a multiple of %" PRIu64 " and chunk a power of two", PAGE_SIZE);
	walk->chunk_shift = (unsigned)__builtin_ctzll(region->chunk);
	walk->pages = walk->size >> PAGE_SHIFT;
	walk->lines = walk->size >> LINE_SHIFT;
	region->chunks = (walk->size + region->chunk - 1) / region->chunk;
	const char *pattern = required_key(statement, "pattern");
	for (region->pattern = 0; region->pattern < PATTERN_COUNT; region->pattern++)
		if (!strcmp(pattern, pattern_names[region->pattern]))
			return;
	bad_spec(statement->line, "unknown pattern '%s' (uniform, zipf, sequential or chase)", pattern);
}

static void check_phase_complete(const struct spec *spec, unsigned line)
{
	if (!spec->phase_count)
		return;
	const struct phase *phase = &spec->phases[spec->phase_count - 1];
	for (size_t i = 0; i < spec->region_count; i++)
		if (!phase->plans[i].given)
			bad_spec(line, "phase %zu has no 'access' line for region '%s'", spec->phase_count - 1,
				 spec->regions[i].name);
}

static void read_phase(struct spec *spec, struct statement *statement)
{
	if (!spec->region_count)
		bad_spec(statement->line, "'phase' before any 'region'");
	check_phase_complete(spec, statement->line);
	spec->phases = realloc(spec->phases, (spec->phase_count + 1) * sizeof *spec->phases);
	if (!spec->phases)
		die("out of memory for phases");
	struct phase *phase = &spec->phases[spec->phase_count++];
	*phase = (struct phase){.epochs = u64_key(statement, "epochs", 1, UINT32_MAX)};
}

static void read_access(struct spec *spec, struct statement *statement)
{
	if (!spec->phase_count)
		bad_spec(statement->line, "'access' before any 'phase'");
	const char *name = required_key(statement, "region");
	struct region *region = find_region(spec, name);
	if (!region)
		bad_spec(statement->line, "no region named '%s'", name);
	struct plan *plan = &spec->phases[spec->phase_count - 1].plans[region - spec->regions];
	if (plan->given)
		bad_spec(statement->line, "region '%s' has two 'access' lines in this phase", name);
	uint64_t pages = region->walk.pages;
	*plan = (struct plan){
		.given = true,
		.count = u64_key(statement, "count", 0, MAX_COUNT),
		.write_step = (uint64_t)(optional_double_key(statement, "write", 0, 0, 1) * (double)WRITE_ONE + 0.5),
	};
	if (region->pattern == ZIPF) {
		plan->exponent = optional_double_key(statement, "exponent", 1, 0.001, 100);
		plan->hot_offset = optional_u64_key(statement, "hot_offset", 0, 0, pages - 1);
		plan->hot_drift = optional_u64_key(statement, "hot_drift", 0, 0, pages - 1);
	} else if (region->pattern == SEQUENTIAL) {
		plan->stride = optional_u64_key(statement, "stride", 64, 8, region->walk.size);
		if (plan->stride % 8)
			bad_spec(statement->line, "stride must be a multiple of 8 bytes");
	}
}

static void read_spec(FILE *input, struct spec *spec)
{
	char text[MAX_LINE];
	unsigned line = 0;
	bool header = false;
	struct statement statement;
	while (fgets(text, sizeof text, input)) {
		line++;
		if (!strchr(text, '\n') && !feof(input))
			bad_spec(line, "longer than %d characters", MAX_LINE - 2);
		if (!split_statement(text, line, &statement))
			continue;
		if (!header) {
			if (strcmp(statement.keyword, "memtouch") || strcmp(required_key(&statement, "version"), "1"))
				bad_spec(line, "the spec must start with 'memtouch version=1'");
			header = true;
		} else if (!strcmp(statement.keyword, "run"))
			read_run(spec, &statement);
		else if (!strcmp(statement.keyword, "region"))
			read_region(spec, &statement);
		else if (!strcmp(statement.keyword, "phase"))
			read_phase(spec, &statement);
		else if (!strcmp(statement.keyword, "access"))
			read_access(spec, &statement);
		else
			bad_spec(line, "unknown statement '%s' (memtouch, run, region, phase or access)", statement.keyword);
		check_all_keys_used(&statement);
	}
	if (ferror(input))
		die("cannot read the spec: %s", strerror(errno));
	if (!spec->phase_count)
		bad_spec(line, "the spec ends before its first 'phase'");
	check_phase_complete(spec, line);
}

/* ---- setting up memory ---- */

/* Regions start on a huge-page boundary so a chunk never straddles two THPs. */
static uint8_t *map_region(uint64_t size)
{
	size_t span = size + HUGE_PAGE;
	uint8_t *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		die("cannot map %" PRIu64 " bytes: %s", size, strerror(errno));
	uint8_t *start = (uint8_t *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
	size_t head = (size_t)(start - raw), tail = span - head - size;
	if ((head && munmap(raw, head)) || (tail && munmap(start + size, tail)))
		die("cannot trim a mapping: %s", strerror(errno));
	return start;
}

/* Sattolo's shuffle of the identity gives one cycle through every line; the
 * identity pass is also the region's first touch, in address order. */
static void link_chase_cycle(struct walk *walk)
{
	uint64_t *word = (uint64_t *)walk->base;
	for (uint64_t line = 0; line < walk->lines; line++)
		word[line * WORDS_PER_LINE] = line;
	for (uint64_t line = walk->lines - 1; line > 0; line--) {
		uint64_t other = below(splitmix64(&walk->rng), line) * WORDS_PER_LINE;
		uint64_t swap = word[line * WORDS_PER_LINE];
		word[line * WORDS_PER_LINE] = word[other];
		word[other] = swap;
	}
}

/* The first store to each page decides where it is placed (first touch).
 * Populating in one call first saves a page fault per page, which is costly
 * under emulation; the stores below still touch every page where the kernel
 * lacks it (Linux < 5.14). */
static void first_touch(struct region *region)
{
	struct walk *walk = &region->walk;
	walk->base = map_region(walk->size);
	(void)madvise(walk->base, walk->size, MADV_POPULATE_WRITE);
	if (region->pattern == CHASE) {
		link_chase_cycle(walk);
		return;
	}
	for (uint64_t offset = 0; offset < walk->size; offset += PAGE_SIZE)
		((volatile uint8_t *)walk->base)[offset] = 1;
}

static void set_up(struct spec *spec)
{
	uint64_t seeds = spec->seed;
	for (size_t i = 0; i < spec->region_count; i++) {
		struct region *region = &spec->regions[i];
		region->walk.rng = splitmix64(&seeds);
		region->walk.write_credit = WRITE_ONE / 2; /* rounds the writes of the first epoch */
		region->walk.reads = allocate(region->chunks, sizeof(uint64_t));
		region->walk.writes = allocate(region->chunks, sizeof(uint64_t));
		first_touch(region);
	}
	/* One zipf table per region and exponent, built before the clock starts. */
	for (size_t p = 0; p < spec->phase_count; p++)
		for (size_t i = 0; i < spec->region_count; i++) {
			struct plan *plan = &spec->phases[p].plans[i];
			if (spec->regions[i].pattern != ZIPF)
				continue;
			for (size_t earlier = 0; earlier < p && !plan->alias; earlier++)
				if (spec->phases[earlier].plans[i].exponent == plan->exponent)
					plan->alias = spec->phases[earlier].plans[i].alias;
			if (!plan->alias)
				plan->alias = zipf_alias_table(spec->regions[i].walk.pages, plan->exponent);
		}
}

/* ---- accessing memory ---- */

/* One counted access; stores carry the error-diffusion write fraction. */
static inline __attribute__((always_inline)) void touch(struct walk *walk, uint64_t offset)
{
	volatile uint64_t *word = (volatile uint64_t *)(walk->base + offset);
	uint64_t chunk = offset >> walk->chunk_shift;
	walk->write_credit += walk->write_step;
	if (walk->write_credit >= WRITE_ONE) {
		walk->write_credit -= WRITE_ONE;
		*word = offset;
		walk->writes[chunk]++;
	} else {
		(void)*word;
		walk->reads[chunk]++;
	}
}

static inline __attribute__((always_inline)) uint64_t next_uniform(struct walk *walk)
{
	return below(splitmix64(&walk->rng), walk->lines) << LINE_SHIFT;
}

/* 32 random bits pick a rank, 26 the alias choice, 6 the line in the page. */
static inline __attribute__((always_inline)) uint64_t next_zipf(struct walk *walk)
{
	uint64_t random = splitmix64(&walk->rng);
	uint64_t rank = ((random & UINT32_MAX) * walk->pages) >> 32;
	uint64_t entry = walk->alias[rank];
	if (((random >> 32) & (ALIAS_FULL - 1)) >= (uint32_t)entry)
		rank = entry >> 32;
	uint64_t page = rank + walk->hot_page;
	if (page >= walk->pages)
		page -= walk->pages;
	return page << PAGE_SHIFT | (random >> 58) << LINE_SHIFT;
}

static inline __attribute__((always_inline)) uint64_t next_sequential(struct walk *walk)
{
	uint64_t offset = walk->cursor;
	walk->cursor += walk->stride;
	if (walk->cursor >= walk->size)
		walk->cursor -= walk->size;
	return offset;
}

static inline __attribute__((always_inline)) uint64_t next_chase(struct walk *walk)
{
	walk->cursor = ((volatile uint64_t *)walk->base)[walk->cursor * WORDS_PER_LINE];
	return walk->cursor << LINE_SHIFT | sizeof(uint64_t);
}

typedef uint64_t next_offset(struct walk *walk);

/* Inlined once per pattern, so each loop has its own next-offset code. */
static inline __attribute__((always_inline)) void access_loop(struct walk *shared, uint64_t count, next_offset *next)
{
	struct walk walk = *shared;
	for (uint64_t i = 0; i < count; i++)
		touch(&walk, next(&walk));
	*shared = walk;
}

static void access_uniform(struct walk *walk, uint64_t count) { access_loop(walk, count, next_uniform); }
static void access_zipf(struct walk *walk, uint64_t count) { access_loop(walk, count, next_zipf); }
static void access_sequential(struct walk *walk, uint64_t count) { access_loop(walk, count, next_sequential); }
static void access_chase(struct walk *walk, uint64_t count) { access_loop(walk, count, next_chase); }

static void (*const access_by_pattern[PATTERN_COUNT])(struct walk *, uint64_t) = {
	[UNIFORM] = access_uniform, [ZIPF] = access_zipf, [SEQUENTIAL] = access_sequential, [CHASE] = access_chase};

/* ---- epochs ---- */

static uint64_t now_us(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
}

static void sleep_until_us(uint64_t deadline)
{
	struct timespec until = {.tv_sec = (time_t)(deadline / 1000000), .tv_nsec = (long)(deadline % 1000000) * 1000};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
		continue;
}

static void start_epoch(struct spec *spec, const struct phase *phase, uint64_t epoch_in_phase)
{
	for (size_t i = 0; i < spec->region_count; i++) {
		struct walk *walk = &spec->regions[i].walk;
		const struct plan *plan = &phase->plans[i];
		walk->write_step = plan->write_step;
		walk->stride = plan->stride;
		walk->alias = plan->alias;
		walk->hot_page = walk->pages ? (plan->hot_offset + plan->hot_drift * epoch_in_phase) % walk->pages : 0;
		memset(walk->reads, 0, spec->regions[i].chunks * sizeof(uint64_t));
		memset(walk->writes, 0, spec->regions[i].chunks * sizeof(uint64_t));
	}
}

struct epoch_timing {
	uint64_t busy;     /* time spent accessing memory */
	uint64_t finished; /* when the last access was done */
};

/* Runs one epoch from start. Slice s does count*(s+1)/slices - count*s/slices
 * of a region's accesses, so the epoch's totals are exact. */
static struct epoch_timing run_epoch(struct spec *spec, const struct phase *phase, uint64_t start)
{
	struct epoch_timing timing = {0};
	for (uint64_t slice = 0; slice < spec->slices; slice++) {
		uint64_t began = now_us();
		for (size_t i = 0; i < spec->region_count; i++) {
			uint64_t count = phase->plans[i].count;
			uint64_t share = count * (slice + 1) / spec->slices - count * slice / spec->slices;
			access_by_pattern[spec->regions[i].pattern](&spec->regions[i].walk, share);
		}
		timing.finished = now_us();
		timing.busy += timing.finished - began;
		sleep_until_us(start + spec->epoch_us * (slice + 1) / spec->slices);
	}
	return timing;
}

static void print_counts(const struct spec *spec, const char *key, bool writes)
{
	printf(",\"%s\":[", key);
	for (size_t i = 0; i < spec->region_count; i++) {
		const struct region *region = &spec->regions[i];
		const uint64_t *counts = writes ? region->walk.writes : region->walk.reads;
		for (uint64_t chunk = 0; chunk < region->chunks; chunk++)
			printf("%s%" PRIu64, chunk ? "," : (i ? "],[" : "["), counts[chunk]);
	}
	printf("]]");
}

static void print_regions(const struct spec *spec)
{
	printf("{\"type\":\"regions\",\"version\":1,\"pid\":%ld,\"seed\":%" PRIu64 ",\"epoch_us\":%" PRIu64
	       ",\"slices\":%" PRIu64 ",\"page_size\":%" PRIu64 ",\"regions\":[",
	       (long)getpid(), spec->seed, spec->epoch_us, spec->slices, PAGE_SIZE);
	for (size_t i = 0; i < spec->region_count; i++) {
		const struct region *region = &spec->regions[i];
		printf("%s{\"name\":\"%s\",\"pattern\":\"%s\",\"address\":%" PRIuPTR ",\"size\":%" PRIu64
		       ",\"chunk\":%" PRIu64 ",\"pages\":%" PRIu64 ",\"chunks\":%" PRIu64 "}",
		       i ? "," : "", region->name, pattern_names[region->pattern], (uintptr_t)region->walk.base,
		       region->walk.size, region->chunk, region->walk.pages, region->chunks);
	}
	printf("]}\n");
	fflush(stdout);
}

static sigset_t release_signal(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	return set;
}

/* SIGUSR1 is blocked (main), so sigwait takes a release that is already
 * pending at once; SIGTERM and SIGINT are not, and end the program here too. */
static void wait_for_release(void)
{
	sigset_t set = release_signal();
	int received, error = sigwait(&set, &received);
	if (error)
		die("cannot wait for SIGUSR1: %s", strerror(error));
}

static void run(struct spec *spec, bool barrier)
{
	uint64_t epoch = 0, late_epochs = 0, start = now_us(), waited = 0;
	if (barrier) {
		wait_for_release();
		waited = now_us() - start;
		start += waited;
	}
	for (size_t p = 0; p < spec->phase_count; p++)
		for (uint64_t e = 0; e < spec->phases[p].epochs; e++, epoch++) {
			start_epoch(spec, &spec->phases[p], e);
			struct epoch_timing timing = run_epoch(spec, &spec->phases[p], start);
			uint64_t deadline = start + spec->epoch_us;
			bool late = timing.finished > deadline;
			uint64_t end = late ? timing.finished : deadline;
			late_epochs += late;
			printf("{\"type\":\"epoch\",\"epoch\":%" PRIu64 ",\"phase\":%zu,\"start_us\":%" PRIu64
			       ",\"end_us\":%" PRIu64 ",\"busy_us\":%" PRIu64 ",\"wait_us\":%" PRIu64 ",\"late\":%s",
			       epoch, p, start, end, timing.busy, waited, late ? "true" : "false");
			print_counts(spec, "reads", false);
			print_counts(spec, "writes", true);
			printf("}\n");
			fflush(stdout);
			start = end;
			/* Every phase has an epoch, so the last epoch is the last of the last phase. */
			bool last = p + 1 == spec->phase_count && e + 1 == spec->phases[p].epochs;
			if (barrier && !last) {
				wait_for_release();
				/* The next epoch is paced from its release, not from the old schedule. */
				start = now_us();
				waited = start - end;
			}
		}
	printf("{\"type\":\"done\",\"epochs\":%" PRIu64 ",\"late_epochs\":%" PRIu64 "}\n", epoch, late_epochs);
}

int main(int argc, char **argv)
{
	bool check_only = false, linger = false, barrier = false;
	int first = 1;
	/* Flags in any order, each once; a repeated or unknown one is left for the usage check. */
	for (; first < argc; first++) {
		bool *flag = NULL;
		if (!strcmp(argv[first], "--check"))
			flag = &check_only;
		else if (!strcmp(argv[first], "--linger"))
			flag = &linger;
		else if (!strcmp(argv[first], "--barrier"))
			flag = &barrier;
		if (!flag || *flag)
			break;
		*flag = true;
	}
	if (argc > first + 1 || (argc == first + 1 && argv[first][0] == '-' && argv[first][1]) ||
	    (check_only && (linger || barrier))) {
		fprintf(stderr, "usage: memtouch [--check | [--linger] [--barrier]] [SPEC | -]\n");
		return 2;
	}
	/* Blocked before anything else, so a release that comes early waits to be taken
	 * instead of killing the program (SIGUSR1's default action). */
	sigset_t release = release_signal();
	if (barrier && sigprocmask(SIG_BLOCK, &release, NULL))
		die("cannot block SIGUSR1: %s", strerror(errno));
	const char *path = argc == first + 1 ? argv[first] : "-";
	FILE *input = strcmp(path, "-") ? fopen(path, "r") : stdin;
	if (!input) {
		fprintf(stderr, "memtouch: cannot open %s: %s\n", path, strerror(errno));
		return 2;
	}
	struct spec spec = {0};
	read_spec(input, &spec);
	if (check_only)
		return 0;
	set_up(&spec);
	print_regions(&spec);
	run(&spec, barrier);
	if (fflush(stdout))
		return 1;
	while (linger)
		pause();
	return 0;
}
