/*
 * social_rng.h
 *		The deterministic random numbers of the social world (personas.c,
 *		friendship_models.c, communities.c).
 *
 * splitmix64 (Steele, Lea & Flood 2014): one 64-bit word of state, full
 * period, passes BigCrush, and cheap to seed per item.  Every generated thing
 * derives its own stream from (seed, purpose, index) with social_rng_for(),
 * so results do not depend on generation order, batch size or platform:
 * the same seed always gives the same agents and the same graph.  Postgres'
 * random() is never used, so the session's setseed() is left alone.
 *
 * The purposes of all the social world's streams are listed here, in one
 * place, so that no two uses ever draw from the same stream.  Their values
 * are part of what a seed reproduces: changing one changes every world built
 * from a given seed.
 *
 * Include postgres.h first (social_rng_seed_arg reads a function argument).
 */
#ifndef SOCIAL_RNG_H
#define SOCIAL_RNG_H

#include <stdint.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/timestamp.h"

/* purposes for social_rng_for() */
typedef enum SocialRngPurpose
{
	SOCIAL_RNG_NAMES = 0,		/* personas.c: the name permutation of a call */
	SOCIAL_RNG_PERSONA = 1,		/* personas.c: agent i's persona */
	SOCIAL_RNG_GRAPH_BUILD = 11,	/* friendship_models.c: the model's draws */
	SOCIAL_RNG_FRIENDSHIP = 12, /* friendship_models.c: since/strength of a pair */
	SOCIAL_RNG_LABELS = 13		/* communities.c: label propagation */
} SocialRngPurpose;

typedef struct SocialRng
{
	uint64_t	state;
} SocialRng;

static inline uint64_t
social_mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

static inline uint64_t
social_rng_next(SocialRng *r)
{
	r->state += UINT64_C(0x9e3779b97f4a7c15);
	return social_mix64(r->state);
}

/* The stream for item `index` of purpose `purpose` under `seed`. */
static inline SocialRng
social_rng_for(uint64_t seed, uint64_t purpose, uint64_t index)
{
	SocialRng	r;

	r.state = social_mix64(seed ^ social_mix64(purpose * UINT64_C(0x9e3779b97f4a7c15) + index));
	return r;
}

/* Uniform in [0, n), n > 0 (Lemire's multiply-shift; bias < n / 2^64). */
static inline uint64_t
social_rng_below(SocialRng *r, uint64_t n)
{
	return (uint64_t) (((unsigned __int128) social_rng_next(r) * n) >> 64);
}

/* Uniform in [0, 1). */
static inline double
social_rng_double(SocialRng *r)
{
	return (social_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/*
 * The seed of a call: argument argno, or, when it is NULL, a fresh one from
 * pg_strong_random() (the time and pid if that fails), so that leaving the
 * seed out gives a new world each call.
 */
static inline uint64_t
social_rng_seed_arg(FunctionCallInfo fcinfo, int argno)
{
	uint64_t	seed;

	if (!PG_ARGISNULL(argno))
		return (uint64_t) PG_GETARG_INT64(argno);
	if (!pg_strong_random(&seed, sizeof(seed)))
		seed = (uint64_t) GetCurrentTimestamp() ^ ((uint64_t) MyProcPid << 32);
	return seed;
}

#endif							/* SOCIAL_RNG_H */
