/*-------------------------------------------------------------------------
 *
 * pg_swarm_test.c
 *		Entry points for tests only: the worker's own store of results
 *		(src/queue.c), callable from SQL so that an isolation test can race
 *		it against swarm.cancel().
 *
 * Not part of the extension: test/run_all.sh builds and installs this
 * library, and the test that needs it declares the function (as superuser):
 *
 *	 CREATE FUNCTION public.swarm_test_store_results(bigint[], text[])
 *		 RETURNS integer LANGUAGE c AS 'pg_swarm_test', 'swarm_test_store_results';
 *
 * The server must preload pg_swarm (it does for every test): this library's
 * calls into queue.c are resolved against the loaded pg_swarm.so.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "queue.h"

PG_MODULE_MAGIC;

/* the number of rows of swarm.messages, read through SPI */
static int64
count_messages(void)
{
	bool		isnull;

	if (SPI_execute("SELECT count(*) FROM swarm.messages", false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not count swarm.messages");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * swarm_test_store_results(request_ids bigint[], contents text[]): store
 * answers for the given requests through the very code the worker uses
 * (queue_store_results), in the caller's transaction; returns how many
 * requests were still queued and became messages.
 */
PG_FUNCTION_INFO_V1(swarm_test_store_results);
Datum
swarm_test_store_results(PG_FUNCTION_ARGS)
{
	ArrayType  *ids = PG_GETARG_ARRAYTYPE_P(0);
	ArrayType  *contents = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *id_datums;
	Datum	   *content_datums;
	bool	   *content_nulls;
	int			n;
	int			ncontents;
	SwarmResult *results;
	int64		before;
	bool		isnull;

	deconstruct_array(ids, INT8OID, 8, true, TYPALIGN_DOUBLE, &id_datums, NULL, &n);
	deconstruct_array(contents, TEXTOID, -1, false, TYPALIGN_INT, &content_datums,
					  &content_nulls, &ncontents);
	if (n != ncontents)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("request_ids and contents must have the same length")));

	SPI_connect();
	results = palloc0(sizeof(SwarmResult) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		Oid			argtypes[1] = {INT8OID};
		Datum		args[1] = {id_datums[i]};

		if (SPI_execute_with_args("SELECT job_id FROM swarm.requests WHERE id = $1",
								  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("request " INT64_FORMAT " does not exist", DatumGetInt64(id_datums[i]))));
		results[i].job_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														SPI_tuptable->tupdesc, 1, &isnull));
		results[i].job = NULL;
		results[i].request_id = DatumGetInt64(id_datums[i]);
		results[i].ok = true;
		results[i].advances = true;
		results[i].attempts = 1;
		results[i].content = content_nulls[i] ? NULL : TextDatumGetCString(content_datums[i]);
		results[i].model = "test";
		results[i].prompt_tokens = -1;
		results[i].completion_tokens = -1;
	}
	before = count_messages();
	if (n > 0)
		queue_store_results(results, n, NULL);
	n = (int) (count_messages() - before);
	SPI_finish();
	PG_RETURN_INT32(n);
}
