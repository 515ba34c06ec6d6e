/*
 * mock_llm.c
 *	  Entry point of mock_llm, the OpenAI-compatible endpoint pg_swarm's
 *	  tests, demo and benchmarks use in place of a real LLM.  See
 *	  docs/mock.md for what it answers and how to script failures.
 *
 * This file owns the process lifecycle and nothing else:
 *	 1. parse the command line into mock_config (read-only afterwards),
 *	    including the distributions of --latency and --words, the share
 *	    --invalid-actions (0..1), the --fault list (checked here by
 *	    chat_init(), so a typo stops start-up), the --batch-* timings,
 *	    share and answer delay of the Batch API (mock_batch.c) and the
 *	    fixtures directory, which defaults to test/fixtures/replies next
 *	    to the binary's checkout (found through /proc/self/exe, so it does
 *	    not depend on the current directory);
 *	 2. raise the RLIMIT_NOFILE soft limit to the hard limit, since every
 *	    connection is a descriptor and benchmarks open thousands;
 *	 3. open one listening socket per worker, all on the same address with
 *	    SO_REUSEPORT so the kernel balances connections between threads.
 *	    A probe bind without SO_REUSEPORT first makes "port already in use"
 *	    an error instead of silently sharing the port with another process,
 *	    and resolves --port 0 to a concrete free port;
 *	 4. start the workers (mock_server.c) with SIGINT/SIGTERM blocked, print
 *	    the single ready line scripts wait for, and sigwait() here;
 *	 5. on a signal, set mock_stopping and make the shared eventfd readable;
 *	    every worker leaves its loop, the main thread joins and frees them,
 *	    and the process exits 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mock.h"

#define MAX_THREADS		64
#define LISTEN_BACKLOG	4096

/* --fixtures default, relative to the directory two above the binary's. */
#define FIXTURES_FROM_ROOT	"test/fixtures/replies"

static char default_fixtures[PATH_MAX];

MockConfig	mock_config = {
	.host = "127.0.0.1",
	.port = 8000,
	.latency_ms = 0,
	.jitter_ms = 0,
	.threads = 1,
	.words = 20,
	.max_inflight = 0,
	.saturate = 0,
	.rps_limit = 0,
	.batch_validating_ms = 200,
	.batch_processing_ms = 1000,
	.batch_finalizing_ms = 200,
	.quiet = false,
};

void
mock_log(const char *fmt,...)
{
	va_list		args;
	char		line[1024];

	if (mock_config.quiet)
		return;
	va_start(args, fmt);
	vsnprintf(line, sizeof(line), fmt, args);
	va_end(args);
	fprintf(stderr, "mock_llm: %s\n", line);
}

static void
print_usage(FILE *out)
{
	fprintf(out,
			"usage: mock_llm [options]\n"
			"  --host ADDR         address to listen on (default 127.0.0.1)\n"
			"  --port N            TCP port, 0 picks a free one (default 8000)\n"
			"  --latency-ms N      delay before each chat completion reply (default 0)\n"
			"  --jitter-ms N       plus a uniform random 0..N ms (default 0)\n"
			"  --latency SPEC      latency distribution per reply, overrides the two above:\n"
			"                      fixed:MS, uniform:MIN-MAX, lognormal:MEDIAN,SIGMA or\n"
			"                      heavytail:MEDIAN,SIGMA,P,MULT (x MULT with probability P);\n"
			"                      ms, each sample capped at 10 minutes\n"
			"  --ms-per-token X    add X ms per completion token: latency = time to first\n"
			"                      token (the sample above) + completion_tokens x X\n"
			"  --seed N            seed the per-thread random generators (default: the clock)\n"
			"  --threads N         worker threads, one epoll and socket each (default 1)\n"
			"  --words SPEC        filler words per completion, capped by max_tokens: N\n"
			"                      (default 20, the same for the same body), uniform:MIN-MAX\n"
			"                      or lognormal:MEDIAN,SIGMA (drawn per request)\n"
			"  --max-inflight N    answer 429 when N chat requests are in flight (default 0: off)\n"
			"  --saturate K        at most K chat replies in service at once (all threads);\n"
			"                      later ones wait in a FIFO, then get their latency (0: off)\n"
			"  --saturate-mode M   what happens past K: queue (the only mode, the default)\n"
			"  --rps-limit N       admit N chat requests per wall-clock second, answer 429\n"
			"                      with x-ratelimit-* headers past that (default 0: off)\n"
			"  --invalid-actions P share (0..1, default 0) of structured (action) replies\n"
			"                      that are invalid, chosen by the body's hash\n"
			"  --fault LIST        directives, as inside [[mock:...]], for every chat\n"
			"                      request without its own, e.g. --fault status=500\n"
			"  --fixtures DIR      where fixture=NAME finds NAME.http (default: the\n"
			"                      checkout's test/fixtures/replies, found from the binary)\n"
			"  --batch-validating-ms N\n"
			"                      Batch API: a new batch is validating for N ms (default 200)\n"
			"  --batch-processing-ms N\n"
			"                      then in_progress for N ms, its lines answered evenly over\n"
			"                      that time (default 1000)\n"
			"  --batch-finalizing-ms N\n"
			"                      then finalizing for N ms before completed; also\n"
			"                      cancelling -> cancelled (default 200)\n"
			"  --batch-fail-share P\n"
			"                      share (0..1, default 0) of batch lines, chosen by the\n"
			"                      hash of their custom_id, that fail with 500\n"
			"  --batch-expire      batches end expired after processing, half their lines\n"
			"                      answered, the rest batch_expired in the error file\n"
			"  --batch-api-delay-ms N\n"
			"                      answer POST /v1/files, POST /v1/batches and GET\n"
			"                      /v1/files/{id}/content N ms (0..600000, default 0) after\n"
			"                      the call has acted (file stored, batch created)\n"
			"  --quiet             no log lines on stderr\n"
			"Prints \"mock_llm listening on HOST:PORT\" when ready; stops on SIGTERM/SIGINT.\n"
			"See docs/mock.md.\n");
}

static int
parse_int_option(const char *name, const char *text, long min, long max)
{
	char	   *end;
	long		value;

	errno = 0;
	value = strtol(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
	{
		fprintf(stderr, "mock_llm: --%s must be an integer from %ld to %ld, not \"%s\"\n",
				name, min, max, text);
		exit(2);
	}
	return (int) value;
}

static double
parse_float_option(const char *name, const char *text, double min, double max)
{
	char	   *end;
	double		value;

	errno = 0;
	value = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !(value >= min && value <= max))
	{
		fprintf(stderr, "mock_llm: --%s must be a number from %g to %g, not \"%s\"\n",
				name, min, max, text);
		exit(2);
	}
	return value;
}

static void
parse_dist_option(const char *name, const char *text, bool words, MockDist *dist)
{
	const char *problem = dist_parse(text, words, dist);

	if (problem != NULL)
	{
		fprintf(stderr, "mock_llm: --%s \"%s\": %s\n", name, text, problem);
		exit(2);
	}
}

/*
 * The default --fixtures: <binary's directory>/../../test/fixtures/replies,
 * i.e. test/fixtures/replies of the checkout test/mock/mock_llm was built
 * in.  The ../.. is resolved when it exists, to give clean paths in errors.
 */
static const char *
find_default_fixtures(void)
{
	char		binary[PATH_MAX];
	char		resolved[PATH_MAX];
	ssize_t		len = readlink("/proc/self/exe", binary, sizeof(binary) - 1);
	char	   *slash;

	if (len <= 0)
		return FIXTURES_FROM_ROOT;	/* no /proc: relative to the cwd, as a last resort */
	binary[len] = '\0';
	slash = strrchr(binary, '/');
	if (slash != NULL)
		*slash = '\0';
	if (strlen(binary) + sizeof("/../..") > sizeof(binary))
		return FIXTURES_FROM_ROOT;
	strcat(binary, "/../..");
	if (realpath(binary, resolved) == NULL)
		strcpy(resolved, binary);
	if (strlen(resolved) + sizeof("/" FIXTURES_FROM_ROOT) > sizeof(default_fixtures))
		return FIXTURES_FROM_ROOT;
	strcpy(default_fixtures, resolved);
	if (strcmp(resolved, "/") != 0)
		strcat(default_fixtures, "/");
	strcat(default_fixtures, FIXTURES_FROM_ROOT);
	return default_fixtures;
}

static void
parse_command_line(int argc, char **argv)
{
	static const struct option options[] = {
		{"host", required_argument, NULL, 'H'},
		{"port", required_argument, NULL, 'p'},
		{"latency-ms", required_argument, NULL, 'l'},
		{"jitter-ms", required_argument, NULL, 'j'},
		{"threads", required_argument, NULL, 't'},
		{"words", required_argument, NULL, 'w'},
		{"max-inflight", required_argument, NULL, 'm'},
		{"latency", required_argument, NULL, 'L'},
		{"ms-per-token", required_argument, NULL, 'T'},
		{"seed", required_argument, NULL, 's'},
		{"saturate", required_argument, NULL, 'S'},
		{"saturate-mode", required_argument, NULL, 'M'},
		{"rps-limit", required_argument, NULL, 'r'},
		{"invalid-actions", required_argument, NULL, 'I'},
		{"fault", required_argument, NULL, 'f'},
		{"fixtures", required_argument, NULL, 'F'},
		{"batch-validating-ms", required_argument, NULL, 'V'},
		{"batch-processing-ms", required_argument, NULL, 'P'},
		{"batch-finalizing-ms", required_argument, NULL, 'Z'},
		{"batch-fail-share", required_argument, NULL, 'B'},
		{"batch-expire", no_argument, NULL, 'E'},
		{"batch-api-delay-ms", required_argument, NULL, 'D'},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			option;

	while ((option = getopt_long(argc, argv, "", options, NULL)) != -1)
	{
		switch (option)
		{
			case 'H':
				mock_config.host = optarg;
				break;
			case 'p':
				mock_config.port = parse_int_option("port", optarg, 0, 65535);
				break;
			case 'l':
				mock_config.latency_ms = parse_int_option("latency-ms", optarg, 0, 86400000);
				break;
			case 'j':
				mock_config.jitter_ms = parse_int_option("jitter-ms", optarg, 0, 86400000);
				break;
			case 't':
				mock_config.threads = parse_int_option("threads", optarg, 1, MAX_THREADS);
				break;
			case 'w':
				/* a plain N keeps its old meaning (and determinism) */
				if (strchr(optarg, ':') == NULL)
				{
					mock_config.words = parse_int_option("words", optarg, 0, 1000000);
					mock_config.words_dist.kind = DIST_NONE;
				}
				else
					parse_dist_option("words", optarg, true, &mock_config.words_dist);
				break;
			case 'L':
				parse_dist_option("latency", optarg, false, &mock_config.latency);
				break;
			case 'T':
				mock_config.ms_per_token = parse_float_option("ms-per-token", optarg, 0, 600000);
				break;
			case 's':
				{
					char	   *end;

					errno = 0;
					mock_config.seed = strtoull(optarg, &end, 10);
					if (errno != 0 || end == optarg || *end != '\0' || optarg[0] == '-')
					{
						fprintf(stderr, "mock_llm: --seed must be an unsigned 64-bit integer, not \"%s\"\n",
								optarg);
						exit(2);
					}
					mock_config.seed_given = true;
				}
				break;
			case 'S':
				mock_config.saturate = parse_int_option("saturate", optarg, 0, 1000000000);
				break;
			case 'M':
				if (strcmp(optarg, "queue") != 0)
				{
					fprintf(stderr, "mock_llm: --saturate-mode must be \"queue\", not \"%s\"\n",
							optarg);
					exit(2);
				}
				break;
			case 'r':
				mock_config.rps_limit = parse_int_option("rps-limit", optarg, 0, 1000000000);
				break;
			case 'I':
				mock_config.invalid_actions = parse_float_option("invalid-actions", optarg, 0, 1);
				break;
			case 'f':
				mock_config.fault = optarg;
				break;
			case 'F':
				mock_config.fixtures_dir = optarg;
				break;
			case 'V':
				mock_config.batch_validating_ms =
					parse_int_option("batch-validating-ms", optarg, 0, 86400000);
				break;
			case 'P':
				mock_config.batch_processing_ms =
					parse_int_option("batch-processing-ms", optarg, 0, 86400000);
				break;
			case 'Z':
				mock_config.batch_finalizing_ms =
					parse_int_option("batch-finalizing-ms", optarg, 0, 86400000);
				break;
			case 'B':
				mock_config.batch_fail_share = parse_float_option("batch-fail-share", optarg, 0, 1);
				break;
			case 'E':
				mock_config.batch_expire = true;
				break;
			case 'D':
				mock_config.batch_api_delay_ms =
					parse_int_option("batch-api-delay-ms", optarg, 0, 600000);
				break;
			case 'm':
				mock_config.max_inflight = parse_int_option("max-inflight", optarg, 0, 1000000000);
				break;
			case 'q':
				mock_config.quiet = true;
				break;
			case 'h':
				print_usage(stdout);
				exit(0);
			default:
				print_usage(stderr);
				exit(2);
		}
	}
	if (optind < argc)
	{
		fprintf(stderr, "mock_llm: unexpected argument \"%s\"\n", argv[optind]);
		print_usage(stderr);
		exit(2);
	}
	if (mock_config.fixtures_dir == NULL)
		mock_config.fixtures_dir = find_default_fixtures();
}

/* The start-up lines that say which endpoint behaviour this run models. */
static void
log_settings(void)
{
	char		latency[160];
	char		words[96];

	mock_log("latency %d ms + jitter 0..%d ms, %d thread(s), %d words, max inflight %d",
			 mock_config.latency_ms, mock_config.jitter_ms, mock_config.threads,
			 mock_config.words, mock_config.max_inflight);
	if (mock_config.latency.kind != DIST_NONE)
	{
		dist_describe(&mock_config.latency, latency, sizeof(latency));
		mock_log("--latency %s ms per reply (overrides --latency-ms and --jitter-ms)", latency);
	}
	if (mock_config.words_dist.kind != DIST_NONE)
	{
		dist_describe(&mock_config.words_dist, words, sizeof(words));
		mock_log("--words %s per completion, drawn per request, capped by max_tokens", words);
	}
	if (mock_config.ms_per_token > 0)
		mock_log("--ms-per-token %g: latency = sample (time to first token) + completion_tokens x %g ms",
				 mock_config.ms_per_token, mock_config.ms_per_token);
	if (mock_config.saturate > 0)
		mock_log("--saturate %d: at most %d chat replies in service across all threads, "
				 "the rest wait in one FIFO queue", mock_config.saturate, mock_config.saturate);
	if (mock_config.rps_limit > 0)
		mock_log("--rps-limit %d: at most %d chat requests admitted per wall-clock second, "
				 "429 past that", mock_config.rps_limit, mock_config.rps_limit);
	if (mock_config.invalid_actions > 0)
		mock_log("--invalid-actions %g: that share of structured (action) replies is invalid",
				 mock_config.invalid_actions);
	if (mock_config.fault != NULL)
		mock_log("--fault [[mock:%s]] for every chat request without its own directive",
				 mock_config.fault);
	mock_log("batches: validating %d ms, in_progress %d ms, finalizing %d ms%s; "
			 "upload, create and content answered %d ms after acting (--batch-api-delay-ms)",
			 mock_config.batch_validating_ms, mock_config.batch_processing_ms,
			 mock_config.batch_finalizing_ms,
			 mock_config.batch_expire ? ", then expired (--batch-expire)" : "",
			 mock_config.batch_api_delay_ms);
	if (mock_config.batch_fail_share > 0)
		mock_log("--batch-fail-share %g: that share of batch lines fails with 500",
				 mock_config.batch_fail_share);
	if (mock_config.seed_given)
		mock_log("--seed %llu: thread i draws from a generator seeded with it and i",
				 (unsigned long long) mock_config.seed);
	else
		mock_log("random generators seeded from the clock (--seed N to repeat a run)");
	mock_log("fixtures from %s", mock_config.fixtures_dir);
}

static void
raise_fd_limit(void)
{
	struct rlimit limit;

	if (getrlimit(RLIMIT_NOFILE, &limit) != 0)
		return;
	if (limit.rlim_cur < limit.rlim_max)
	{
		limit.rlim_cur = limit.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &limit) != 0)
			mock_log("could not raise the open-file limit: %s", strerror(errno));
	}
	if (getrlimit(RLIMIT_NOFILE, &limit) == 0)
		mock_log("open-file limit %llu", (unsigned long long) limit.rlim_cur);
}

static void
fail_listen(const char *what)
{
	fprintf(stderr, "mock_llm: cannot listen on %s:%d: %s: %s\n",
			mock_config.host, mock_config.port, what, strerror(errno));
	exit(1);
}

static void
set_port(struct sockaddr_storage *address, int port)
{
	if (address->ss_family == AF_INET6)
		((struct sockaddr_in6 *) address)->sin6_port = htons((uint16_t) port);
	else
		((struct sockaddr_in *) address)->sin_port = htons((uint16_t) port);
}

static int
get_port(const struct sockaddr_storage *address)
{
	if (address->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *) address)->sin6_port);
	return ntohs(((const struct sockaddr_in *) address)->sin_port);
}

/*
 * Open the COUNT listening sockets into FDS and return the port they are on
 * (the one the kernel chose when --port is 0).
 */
static int
open_listeners(int *fds, int count)
{
	struct addrinfo hints = {0};
	struct addrinfo *found;
	struct sockaddr_storage address;
	socklen_t	address_len;
	int			one = 1;
	int			probe;
	int			status;
	char		port_text[16];

	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(port_text, sizeof(port_text), "%d", mock_config.port);
	status = getaddrinfo(mock_config.host, port_text, &hints, &found);
	if (status != 0)
	{
		fprintf(stderr, "mock_llm: cannot resolve --host %s: %s\n",
				mock_config.host, gai_strerror(status));
		exit(1);
	}
	memcpy(&address, found->ai_addr, found->ai_addrlen);
	address_len = found->ai_addrlen;
	freeaddrinfo(found);

	/* The probe: fails if anyone listens there, and picks the port for 0. */
	probe = socket(address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe < 0)
		fail_listen("socket");
	setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(probe, (struct sockaddr *) &address, address_len) != 0)
		fail_listen("bind");
	if (getsockname(probe, (struct sockaddr *) &address, &address_len) != 0)
		fail_listen("getsockname");
	close(probe);
	mock_config.port = get_port(&address);
	set_port(&address, mock_config.port);

	for (int i = 0; i < count; i++)
	{
		fds[i] = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fds[i] < 0)
			fail_listen("socket");
		if (setsockopt(fds[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
			setsockopt(fds[i], SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
			fail_listen("setsockopt");
		if (bind(fds[i], (struct sockaddr *) &address, address_len) != 0)
			fail_listen("bind");
		if (listen(fds[i], LISTEN_BACKLOG) != 0)
			fail_listen("listen");
	}
	return mock_config.port;
}

int
main(int argc, char **argv)
{
	int			listen_fds[MAX_THREADS];
	MockWorker *workers[MAX_THREADS];
	pthread_t	threads[MAX_THREADS];
	sigset_t	stop_signals;
	int			wake_fd;
	int			signal_number = 0;
	uint64_t	one = 1;

	parse_command_line(argc, argv);
	{
		const char *problem = chat_init();

		if (problem != NULL)
		{
			fprintf(stderr, "%s (in --fault \"%s\")\n", problem, mock_config.fault);
			return 2;
		}
	}
	raise_fd_limit();
	stats_init();
	open_listeners(listen_fds, mock_config.threads);

	wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (wake_fd < 0)
	{
		perror("mock_llm: eventfd");
		return 1;
	}

	/* Workers inherit this mask: only the main thread takes the signals. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

	for (int i = 0; i < mock_config.threads; i++)
	{
		workers[i] = worker_create(i, listen_fds[i], wake_fd);
		if (workers[i] == NULL)
		{
			perror("mock_llm: cannot create worker");
			return 1;
		}
		errno = pthread_create(&threads[i], NULL, worker_run, workers[i]);
		if (errno != 0)
		{
			perror("mock_llm: cannot start worker thread");
			return 1;
		}
	}

	log_settings();
	printf("mock_llm listening on %s:%d\n", mock_config.host, mock_config.port);
	fflush(stdout);

	while (sigwait(&stop_signals, &signal_number) != 0)
		;
	atomic_store(&mock_stopping, 1);
	if (write(wake_fd, &one, sizeof(one)) != sizeof(one))
		perror("mock_llm: eventfd write");
	for (int i = 0; i < mock_config.threads; i++)
	{
		pthread_join(threads[i], NULL);
		worker_destroy(workers[i]);
	}
	close(wake_fd);
	mock_log("stopped by %s", strsignal(signal_number));
	return 0;
}
