/*
** cli_cache.h -- the cache subcommands of vecattn-autotune: list, show, export, import,
** precompile, verify, clear (cli_cache.c, cli_precompile.c), and the global --cache option.
*/
#ifndef VECATTN_CLI_CACHE_H
#define VECATTN_CLI_CACHE_H

/* The --help lines of the subcommands and of --cache, for cli.c's usage text. */
#define VA_CLI_CACHE_SUBCOMMANDS                                                                 \
    "  list            the tuned entries of the cache, one line each (shipped ones marked)\n"      \
    "  show            cache path, mode, schema version, rows per table, size\n"                   \
    "  export FILE     write the tuned entries as JSON (cache/pretuned/FORMAT.md)\n"                \
    "  import FILE     validate a JSON file, then merge it (all or nothing; faster entry stays)\n"  \
    "  precompile      NVRTC-compile the default and the tuned kernels into the cache (no GPU)\n"  \
    "  verify          check every kernel blob's checksum and every tuned row; 2 if any is bad\n"  \
    "  clear           delete compiled kernels (default), tuned entries or everything\n"

#define VA_CLI_CACHE_FLAGS                                                                       \
    "--cache PATH (before any subcommand, or after a cache subcommand):\n"                       \
    "  the cache file (default: $VECATTN_CACHE, else $XDG_CACHE_HOME/vecattn/cache.db, else\n"   \
    "  ~/.cache/vecattn/cache.db); sets VECATTN_CACHE for everything the tool does\n"            \
    "\n"                                                                                          \
    "list, export:   --device NAME|CC:SMS   only one device (e.g. 90:132), matched by cc + SMs\n" \
    "precompile:     --arch sm_80,sm_90a (required)  --head-dim 128,64 (default both)\n"         \
    "                --dtype bf16[,fp16] (default bf16)  --jobs N (default: CPU cores)\n"          \
    "clear:          --kernels (kernels and failed configs; default) | --tuned | --all\n"

#include "cache/cache.h"

/* ---- shared by the cache subcommands (cli_cache.c) ------------------------------------- */

/* One flag of a subcommand: `--name VALUE` (value != NULL) or `--name` (flag != NULL). */
typedef struct va_cli_opt {
    const char *name;
    const char **value;
    int *flag;
} va_cli_opt;

enum { VA_CLI_OK = 0, VA_CLI_USAGE = 1, VA_CLI_FAIL = 2, VA_CLI_CONTINUE = -1 };

/* Parse the flags (a {NULL} row ends `opts`; --cache is always accepted) and at most
** `max_pos` positional arguments into pos[]. VA_CLI_CONTINUE, VA_CLI_OK after --help, or
** VA_CLI_USAGE with the culprit named on stderr. */
int va_cli_parse(const char *cmd, int argc, char **argv, const va_cli_opt *opts, const char **pos, int max_pos);

/* --help (the tool's usage) or --device N (an ordinal into *device) for info and selftest
** (cli.c): VA_CLI_CONTINUE, VA_CLI_OK after --help, VA_CLI_USAGE. */
int va_cli_device_flag(const char *cmd, int argc, char **argv, int *device);

/* A whole decimal integer in [lo, hi] -> *out; 1 on success, 0 (out untouched) otherwise. */
int va_cli_int(const char *s, int lo, int hi, int *out);

/* "vecattn-autotune <cmd>: <message>" on stderr; return VA_CLI_USAGE / VA_CLI_FAIL. */
int va_cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int va_cli_failure(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The cache as the library opens it (the warning, if any, printed); `writable` refuses
** anything but a read-write file. NULL after printing why. */
va_cache *va_cli_open_cache(const char *cmd, int writable);

/* ---- subcommands ----------------------------------------------------------------------- */

/* Take the `--cache PATH` / `--cache=PATH` options in front of the subcommand out of argv
** (argv[0] stays) and export PATH as VECATTN_CACHE, so that every subcommand, and every
** context the tool creates, uses it. 0 ok, 1 (usage, message printed) when PATH is missing. */
int va_cli_cache_option(int *argc, char **argv);

int va_cli_list(int argc, char **argv);
int va_cli_show(int argc, char **argv);
int va_cli_export(int argc, char **argv);
int va_cli_import(int argc, char **argv);
int va_cli_precompile(int argc, char **argv);
int va_cli_verify(int argc, char **argv);
int va_cli_clear(int argc, char **argv);

#endif /* VECATTN_CLI_CACHE_H */
