/*
 * personas.c
 *		Persona generation for swarm.create_agents().
 *
 * What this file owns
 * -------------------
 * The vocabularies a persona is drawn from and swarm._persona_rows(count,
 * seed), a value-per-call set-returning function yielding (name, persona)
 * rows.  swarm.create_agents() (src/sql/functions/20_social.sql) feeds it to an
 * INSERT ... SELECT, called from the target list so that rows stream into
 * the heap one by one instead of being materialised in a tuplestore first.
 *
 * Determinism: agent i of a call (0-based) is a pure function of (seed, i):
 * its own splitmix64 stream (social_rng.h), no shared state, no random().
 * Names are "First M. Last": 200 first names x 26 middle initials x 200 last
 * names = 1,040,000 combinations; agent i takes combination (a*i + b) mod N
 * with a coprime to N, both drawn from the seed, so the names of one call are
 * all distinct up to N agents; beyond that a number is appended
 * ("Maria K. Okafor 2"), which keeps them distinct at any count.
 *
 * The persona jsonb is built as a JsonbValue tree whose object keys are
 * written in jsonb's own order (shorter first, then bytewise), so it is
 * converted with JsonbValueToJsonb() without a sort; about 2 microseconds per
 * agent.  Each row's memory lives in the executor's per-tuple context.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "social_rng.h"

PG_FUNCTION_INFO_V1(swarm_persona_rows);

#define lengthof_vocab(a) ((int) (sizeof(a) / sizeof((a)[0])))

static const char *const persona_first_names[] = {
	"Aaliyah", "Aarav", "Abebe", "Ada", "Adele", "Adrian", "Agnes", "Ahmed", "Aiko", "Akira",
	"Alba", "Alejandro", "Alexei", "Alice", "Amara", "Amelia", "Amir", "Ana", "Anders", "Andrea",
	"Anika", "Anna", "Antoine", "Aria", "Arjun", "Astrid", "Aurora", "Ayesha", "Barbara", "Beatriz",
	"Ben", "Bianca", "Bjorn", "Boris", "Bruno", "Camila", "Carlos", "Carmen", "Catalina", "Chen",
	"Chiara", "Chidi", "Chloe", "Clara", "Dalia", "Daniel", "Daniela", "Dario", "David", "Deepa",
	"Diego", "Dmitri", "Ebele", "Elena", "Elif", "Elijah", "Elsa", "Emeka", "Emil", "Emma",
	"Enzo", "Esther", "Ethan", "Eva", "Fatima", "Felix", "Fernanda", "Finn", "Freya", "Gabriel",
	"Giulia", "Grace", "Hana", "Hannah", "Haruto", "Hassan", "Helena", "Hiroshi", "Hugo", "Ibrahim",
	"Ida", "Imani", "Ines", "Ingrid", "Isaac", "Isabel", "Ivan", "Jade", "Jakob", "James",
	"Javier", "Jia", "Jonas", "Jorge", "Julia", "Kai", "Kalani", "Kamala", "Karim", "Kasia",
	"Kenji", "Khadija", "Kofi", "Lara", "Layla", "Leila", "Leo", "Liam", "Lina", "Lucas",
	"Lucia", "Luis", "Luka", "Mai", "Malik", "Marco", "Maria", "Mariam", "Marta", "Mateo",
	"Maya", "Mehmet", "Mei", "Mia", "Miguel", "Mila", "Mohammed", "Nadia", "Naledi", "Nia",
	"Nikolai", "Nina", "Noah", "Nora", "Olga", "Oliver", "Olivia", "Omar", "Oscar", "Paolo",
	"Pedro", "Priya", "Rafael", "Rahul", "Rania", "Ravi", "Rosa", "Ruth", "Saanvi", "Sakura",
	"Salma", "Samuel", "Sara", "Sebastian", "Selin", "Sergei", "Shira", "Sofia", "Sora", "Stefan",
	"Sunita", "Tariq", "Tendai", "Theo", "Thomas", "Tomas", "Uma", "Valentina", "Vera", "Victor",
	"Wei", "Wanjiru", "Xavier", "Ximena", "Yara", "Yasmin", "Yuki", "Yusuf", "Zainab", "Zanele",
	"Zara", "Zeynep", "Zoe", "Zuri", "Aiden", "Bella", "Caleb", "Dina", "Eitan", "Farah",
	"Gustav", "Hiba", "Idris", "Jana", "Kwame", "Lotte", "Mina", "Nils", "Orla", "Pilar"
};

static const char *const persona_last_names[] = {
	"Abe", "Adeyemi", "Ahmed", "Alvarez", "Andersen", "Asante", "Bach", "Bakker", "Banerjee", "Barros",
	"Becker", "Bergstrom", "Bianchi", "Bose", "Brown", "Campbell", "Cardoso", "Castro", "Chatterjee", "Chen",
	"Cohen", "Costa", "Cruz", "Dahl", "Das", "Diallo", "Dias", "Dubois", "Dvorak", "Eze",
	"Farouk", "Fernandes", "Fischer", "Fontaine", "Garcia", "Gomez", "Gonzalez", "Gupta", "Haddad", "Hansen",
	"Hashemi", "Hayashi", "Herrera", "Hoffmann", "Horvath", "Hughes", "Ibrahim", "Ito", "Ivanova", "Jansen",
	"Jensen", "Jimenez", "Johansson", "Kang", "Kaplan", "Kariuki", "Kato", "Kaur", "Khan", "Kim",
	"Kowalski", "Kozlov", "Kumar", "Larsen", "Laurent", "Lee", "Lehmann", "Leone", "Li", "Lindqvist",
	"Liu", "Lopez", "Mahlangu", "Martin", "Martinez", "Matsumoto", "Mbeki", "Mehta", "Mendes", "Meyer",
	"Moreau", "Morales", "Moreno", "Mueller", "Murphy", "Nakamura", "Nascimento", "Navarro", "Nguyen", "Nielsen",
	"Novak", "Nowak", "Nunez", "Obi", "Odhiambo", "Ogunleye", "Okafor", "Okonkwo", "Oliveira", "Olsen",
	"Ortiz", "Osei", "Ozturk", "Park", "Patel", "Pereira", "Petrov", "Popescu", "Quinn", "Rahman",
	"Ramirez", "Rao", "Reyes", "Ribeiro", "Richter", "Rossi", "Russo", "Sahin", "Saito", "Salazar",
	"Santos", "Sato", "Schmidt", "Schneider", "Sharma", "Silva", "Singh", "Smirnov", "Sousa", "Suzuki",
	"Takahashi", "Tanaka", "Tembo", "Torres", "Tran", "Urban", "Vargas", "Vasquez", "Virtanen", "Volkov",
	"Wagner", "Walker", "Wang", "Watanabe", "Weber", "Williams", "Wilson", "Wojcik", "Wu", "Xu",
	"Yamada", "Yamamoto", "Yang", "Yilmaz", "Yoshida", "Zhang", "Zhao", "Zhou", "Zielinski", "Zimmermann",
	"Achebe", "Bauer", "Coelho", "Demir", "Eriksson", "Falk", "Galli", "Huang", "Iyer", "Jovanovic",
	"Keller", "Lam", "Mwangi", "Nair", "Ong", "Pham", "Qureshi", "Rosen", "Sato-Mendes", "Tshabalala",
	"Uddin", "Varga", "Wiśniewski", "Yadav", "Zulu", "Afolabi", "Borg", "Cisse", "Dogan", "Esposito",
	"Friedman", "Grieco", "Holm", "Ishikawa", "Jaramillo", "Kovac", "Lindgren", "Moyo", "Ndlovu", "Oyelaran"
};

static const char *const persona_occupations[] = {
	"accountant", "actor", "agronomist", "air traffic controller", "architect", "archivist", "artist", "astronomer", "baker", "barista",
	"biologist", "bookseller", "bus driver", "carpenter", "cartographer", "chef", "chemist", "civil engineer", "climate scientist", "coach",
	"comedian", "community organizer", "copywriter", "data analyst", "data scientist", "dentist", "designer", "diplomat", "doctor", "economist",
	"editor", "electrician", "entrepreneur", "event planner", "farmer", "firefighter", "fisher", "florist", "game developer", "gardener",
	"geologist", "graphic designer", "historian", "hotel manager", "illustrator", "interpreter", "journalist", "judge", "lawyer", "librarian",
	"linguist", "machinist", "marine biologist", "marketing manager", "mathematician", "mechanic", "midwife", "museum curator", "musician", "nurse",
	"nutritionist", "paramedic", "pharmacist", "photographer", "physicist", "physiotherapist", "pilot", "plumber", "podcaster", "poet",
	"police officer", "product manager", "professor", "programmer", "psychologist", "real estate agent", "researcher", "retired teacher", "sailor", "sales representative",
	"scientist", "screenwriter", "security analyst", "shop owner", "social worker", "software engineer", "sommelier", "student", "surgeon", "tailor",
	"taxi driver", "teacher", "translator", "urban planner", "veterinarian", "video editor", "web developer", "welder", "wildlife ranger", "yoga instructor"
};

static const char *const persona_locations[] = {
	"Accra, Ghana", "Addis Ababa, Ethiopia", "Amsterdam, Netherlands", "Athens, Greece", "Auckland, New Zealand", "Austin, USA", "Bangalore, India", "Bangkok, Thailand", "Barcelona, Spain", "Beijing, China",
	"Beirut, Lebanon", "Berlin, Germany", "Bogota, Colombia", "Boston, USA", "Brisbane, Australia", "Brussels, Belgium", "Bucharest, Romania", "Budapest, Hungary", "Buenos Aires, Argentina", "Cairo, Egypt",
	"Cape Town, South Africa", "Casablanca, Morocco", "Chicago, USA", "Copenhagen, Denmark", "Dakar, Senegal", "Delhi, India", "Denver, USA", "Dhaka, Bangladesh", "Dubai, UAE", "Dublin, Ireland",
	"Edinburgh, UK", "Florence, Italy", "Geneva, Switzerland", "Guadalajara, Mexico", "Hamburg, Germany", "Hanoi, Vietnam", "Havana, Cuba", "Helsinki, Finland", "Ho Chi Minh City, Vietnam", "Hong Kong, China",
	"Istanbul, Turkey", "Jakarta, Indonesia", "Johannesburg, South Africa", "Karachi, Pakistan", "Kigali, Rwanda", "Kyiv, Ukraine", "Kyoto, Japan", "Lagos, Nigeria", "Lima, Peru", "Lisbon, Portugal",
	"London, UK", "Los Angeles, USA", "Lyon, France", "Madrid, Spain", "Manchester, UK", "Manila, Philippines", "Marseille, France", "Melbourne, Australia", "Mexico City, Mexico", "Miami, USA",
	"Milan, Italy", "Montreal, Canada", "Moscow, Russia", "Mumbai, India", "Munich, Germany", "Nairobi, Kenya", "Naples, Italy", "New York, USA", "Osaka, Japan", "Oslo, Norway",
	"Paris, France", "Porto, Portugal", "Prague, Czechia", "Quito, Ecuador", "Reykjavik, Iceland", "Riga, Latvia", "Rio de Janeiro, Brazil", "Rome, Italy", "San Francisco, USA", "Santiago, Chile",
	"Sao Paulo, Brazil", "Seattle, USA", "Seoul, South Korea", "Shanghai, China", "Singapore, Singapore", "Stockholm, Sweden", "Sydney, Australia", "Taipei, Taiwan", "Tallinn, Estonia", "Tel Aviv, Israel",
	"Tokyo, Japan", "Toronto, Canada", "Tunis, Tunisia", "Valencia, Spain", "Vancouver, Canada", "Vienna, Austria", "Vilnius, Lithuania", "Warsaw, Poland", "Wellington, New Zealand", "Zurich, Switzerland"
};

/* 12 themes of 10: a persona favours one theme, which makes interests correlate. */
#define PERSONA_THEMES 12
#define PERSONA_PER_THEME 10
static const char *const persona_interests[PERSONA_THEMES * PERSONA_PER_THEME] = {
	/* sport */
	"running", "cycling", "football", "basketball", "tennis", "swimming", "climbing", "yoga", "martial arts", "skiing",
	/* outdoors */
	"hiking", "camping", "birdwatching", "gardening", "fishing", "sailing", "surfing", "astronomy", "foraging", "kayaking",
	/* music */
	"jazz", "classical music", "hip hop", "rock", "electronic music", "opera", "folk music", "k-pop", "playing guitar", "singing",
	/* arts */
	"painting", "photography", "sculpture", "street art", "calligraphy", "pottery", "knitting", "theatre", "dance", "design",
	/* books */
	"poetry", "science fiction", "fantasy novels", "mystery novels", "history books", "philosophy", "comics", "creative writing", "book clubs", "literary fiction",
	/* screen */
	"film", "documentaries", "anime", "tv series", "film photography", "video games", "board games", "tabletop rpg", "esports", "streaming",
	/* food */
	"cooking", "baking", "coffee", "tea", "wine", "craft beer", "vegan food", "street food", "fermentation", "restaurants",
	/* tech */
	"programming", "artificial intelligence", "robotics", "open source", "cryptography", "electronics", "3d printing", "linux", "data visualization", "startups",
	/* science */
	"physics", "biology", "chemistry", "mathematics", "space exploration", "neuroscience", "climate science", "ecology", "medicine", "psychology",
	/* society */
	"politics", "economics", "volunteering", "urban planning", "human rights", "education", "journalism", "sustainability", "languages", "history",
	/* lifestyle */
	"travel", "fashion", "interior design", "meditation", "fitness", "parenting", "pets", "thrifting", "minimalism", "personal finance",
	/* games and puzzles */
	"chess", "go", "crosswords", "sudoku", "poker", "puzzles", "trivia", "magic tricks", "escape rooms", "card games"
};

static const char *const persona_styles[] = {
	"concise and factual", "warm and chatty", "witty and sarcastic", "formal and precise", "enthusiastic, lots of exclamation marks",
	"thoughtful and long-winded", "dry humour", "poetic and metaphorical", "blunt and direct", "curious, asks many questions",
	"optimistic and encouraging", "skeptical and analytical", "casual, lowercase, few capitals", "academic, cites sources", "storyteller, personal anecdotes",
	"emoji-heavy", "terse, one-liners", "diplomatic and balanced", "playful and punny", "earnest and idealistic",
	"nostalgic", "technical jargon", "gentle and supportive", "provocative, likes debate"
};

static const char *const persona_bio_formats[] = {
	"%s from %s who loves %s and %s.",
	"%s in %s. Into %s, %s, and good conversations.",
	"Lifelong %s based in %s; weekends are for %s and %s.",
	"%s living in %s. Ask me about %s or %s.",
	"%s (%s). Happiest with %s, curious about %s.",
	"%s by day in %s; by night a fan of %s and %s.",
	"%s, %s. Currently obsessed with %s; slowly learning %s.",
	"Proud %s from %s, talking %s and %s."
};

#define N_FIRST lengthof_vocab(persona_first_names)
#define N_LAST lengthof_vocab(persona_last_names)
#define N_INITIALS 26
#define N_NAMES ((uint64_t) N_FIRST * N_LAST * N_INITIALS)

StaticAssertDecl(lengthof_vocab(persona_interests) >= 100, "interest vocabulary too small");

typedef struct PersonaGenState
{
	uint64_t	seed;
	uint64_t	name_mult;		/* coprime with N_NAMES */
	uint64_t	name_offset;
	TupleDesc	tupdesc;
} PersonaGenState;

static uint64_t
gcd_u64(uint64_t a, uint64_t b)
{
	while (b)
	{
		uint64_t	t = a % b;

		a = b;
		b = t;
	}
	return a;
}

/* Writes agent i's unique name into buf (NUL-terminated). */
static void
persona_name(const PersonaGenState *g, uint64_t i, char *buf, size_t bufsize)
{
	uint64_t	combo = (uint64_t) (((unsigned __int128) g->name_mult * (i % N_NAMES) + g->name_offset) % N_NAMES);
	uint64_t	round = i / N_NAMES;
	const char *first = persona_first_names[combo % N_FIRST];
	const char *last = persona_last_names[(combo / N_FIRST) % N_LAST];
	char		initial = (char) ('A' + combo / ((uint64_t) N_FIRST * N_LAST));

	if (round == 0)
		snprintf(buf, bufsize, "%s %c. %s", first, initial, last);
	else
		snprintf(buf, bufsize, "%s %c. %s " UINT64_FORMAT, first, initial, last, (uint64) round + 1);
}

static inline void
jv_string(JsonbValue *v, const char *s)
{
	v->type = jbvString;
	v->val.string.val = (char *) s;
	v->val.string.len = (int) strlen(s);
}

static inline void
jv_int(JsonbValue *v, int64 n)
{
	v->type = jbvNumeric;
	v->val.numeric = int64_to_numeric(n);
}

/* 1..99, bell-shaped around 50 (mean of three uniforms). */
static int
persona_trait(SocialRng *r)
{
	return 1 + (int) ((social_rng_double(r) + social_rng_double(r) + social_rng_double(r)) / 3.0 * 99.0);
}

/*
 * Builds agent i's persona.  The returned Jsonb is palloc'd in the current
 * memory context.
 */
static Jsonb *
persona_build(const PersonaGenState *g, uint64_t i)
{
	SocialRng	r = social_rng_for(g->seed, SOCIAL_RNG_PERSONA, i);
	int			theme = (int) social_rng_below(&r, PERSONA_THEMES);
	int			ninterests = 3 + (int) social_rng_below(&r, 4);
	int			chosen[6];
	JsonbValue	interests[6];
	JsonbValue	big5_pairs_v[5];
	JsonbPair	big5[5];
	JsonbPair	pairs[7];
	JsonbValue	root,
				big5obj,
				iarr;
	const char *occupation;
	const char *location;
	char		bio[256];
	static const char *const big5_keys[5] = {
		/* jsonb key order: length, then bytes */
		"openness", "neuroticism", "extraversion", "agreeableness", "conscientiousness"
	};

	for (int k = 0; k < ninterests; k++)
	{
		int			pick;
		bool		dup;

		do
		{
			if (social_rng_double(&r) < 0.6)
				pick = theme * PERSONA_PER_THEME + (int) social_rng_below(&r, PERSONA_PER_THEME);
			else
				pick = (int) social_rng_below(&r, lengthof_vocab(persona_interests));
			dup = false;
			for (int j = 0; j < k; j++)
				if (chosen[j] == pick)
					dup = true;
		} while (dup);
		chosen[k] = pick;
		jv_string(&interests[k], persona_interests[pick]);
	}

	occupation = persona_occupations[social_rng_below(&r, lengthof_vocab(persona_occupations))];
	location = persona_locations[social_rng_below(&r, lengthof_vocab(persona_locations))];
	{
		const char *fmt = persona_bio_formats[social_rng_below(&r, lengthof_vocab(persona_bio_formats))];
		char		occ[64];

		/* capitalise the occupation when it opens the sentence */
		strlcpy(occ, occupation, sizeof(occ));
		if (fmt[0] == '%')
			occ[0] = (char) pg_toupper((unsigned char) occ[0]);
		snprintf(bio, sizeof(bio), fmt, occ, location,
				 persona_interests[chosen[0]], persona_interests[chosen[1]]);
	}

	for (int k = 0; k < 5; k++)
	{
		jv_string(&big5[k].key, big5_keys[k]);
		jv_int(&big5_pairs_v[k], persona_trait(&r));
		big5[k].value = big5_pairs_v[k];
		big5[k].order = k;
	}
	big5obj.type = jbvObject;
	big5obj.val.object.nPairs = 5;
	big5obj.val.object.pairs = big5;

	iarr.type = jbvArray;
	iarr.val.array.rawScalar = false;
	iarr.val.array.nElems = ninterests;
	iarr.val.array.elems = interests;

	/* keys in jsonb order: age, bio, big_five, location, interests, occupation, writing_style */
	jv_string(&pairs[0].key, "age");
	jv_int(&pairs[0].value, 18 + (int) ((social_rng_double(&r) + social_rng_double(&r)) * 31.0));
	jv_string(&pairs[1].key, "bio");
	jv_string(&pairs[1].value, bio);
	jv_string(&pairs[2].key, "big_five");
	pairs[2].value = big5obj;
	jv_string(&pairs[3].key, "location");
	jv_string(&pairs[3].value, location);
	jv_string(&pairs[4].key, "interests");
	pairs[4].value = iarr;
	jv_string(&pairs[5].key, "occupation");
	jv_string(&pairs[5].value, occupation);
	jv_string(&pairs[6].key, "writing_style");
	jv_string(&pairs[6].value, persona_styles[social_rng_below(&r, lengthof_vocab(persona_styles))]);
	for (int k = 0; k < 7; k++)
		pairs[k].order = k;

	root.type = jbvObject;
	root.val.object.nPairs = 7;
	root.val.object.pairs = pairs;
	return JsonbValueToJsonb(&root);
}

/*
 * swarm._persona_rows(count int, seed bigint) RETURNS TABLE(name text, persona jsonb)
 *
 * Value-per-call SRF.  ereports on NULL or negative count.  A NULL seed draws
 * one from pg_strong_random().
 */
Datum
swarm_persona_rows(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	PersonaGenState *g;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext oldcontext;
		TupleDesc	tupdesc;
		int64		count;

		if (PG_ARGISNULL(0))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("count must not be null"),
					 errhint("Pass the number of agents to create.")));
		count = PG_GETARG_INT32(0);
		if (count < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("count must not be negative"),
					 errdetail("The count given was %lld.", (long long) count)));

		funcctx = SRF_FIRSTCALL_INIT();
		oldcontext = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		g = palloc0(sizeof(PersonaGenState));
		g->tupdesc = BlessTupleDesc(tupdesc);
		g->seed = social_rng_seed_arg(fcinfo, 1);
		{
			SocialRng	r = social_rng_for(g->seed, SOCIAL_RNG_NAMES, 0);

			do
				g->name_mult = 1 + social_rng_below(&r, N_NAMES - 1);
			while (gcd_u64(g->name_mult, N_NAMES) != 1);
			g->name_offset = social_rng_below(&r, N_NAMES);
		}
		funcctx->user_fctx = g;
		funcctx->max_calls = (uint64) count;
		MemoryContextSwitchTo(oldcontext);
	}

	funcctx = SRF_PERCALL_SETUP();
	g = (PersonaGenState *) funcctx->user_fctx;
	if (funcctx->call_cntr < funcctx->max_calls)
	{
		uint64_t	i = funcctx->call_cntr;
		char		name[96];
		Datum		values[2];
		bool		nulls[2] = {false, false};

		CHECK_FOR_INTERRUPTS();
		persona_name(g, i, name, sizeof(name));
		values[0] = CStringGetTextDatum(name);
		values[1] = JsonbPGetDatum(persona_build(g, i));
		SRF_RETURN_NEXT(funcctx, HeapTupleGetDatum(heap_form_tuple(g->tupdesc, values, nulls)));
	}
	SRF_RETURN_DONE(funcctx);
}
