/* The C API from C: compiled with -Wall -Werror against include/cocoon.h, linked to
 * libcocoon.so, run under valgrind by ci/test.
 *   test_api MODEL_DIR TDX_QUOTE_FILE TDX_COLLATERAL                                                       */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cocoon.h"

static int failures = 0, checks = 0;
#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    checks++;                                                              \
    if (!(cond)) {                                                         \
      failures++;                                                          \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);      \
      fprintf(stderr, __VA_ARGS__);                                        \
      fprintf(stderr, " (last error: %s)\n",                               \
              cocoon_last_error() ? cocoon_last_error() : "none");         \
    }                                                                      \
  } while (0)

static const char *dir;
static char *pin;
static cocoon_model *model;

static int count_pieces(void *user, const char *piece, size_t len) {
  (void)piece;
  *(size_t *)user += len;
  return 0;
}

/* Collects the generated text, JSON-escaped, into a fixed buffer. */
struct text_buf { char s[8192]; size_t n; };
static int collect_json(void *user, const char *piece, size_t len) {
  struct text_buf *b = user;
  for (size_t i = 0; i < len && b->n + 8 < sizeof b->s; i++) {
    unsigned char c = (unsigned char)piece[i];
    if (c == '"' || c == '\\') { b->s[b->n++] = '\\'; b->s[b->n++] = (char)c; }
    else if (c < 0x20) b->n += (size_t)snprintf(b->s + b->n, 8, "\\u%04x", c);
    else b->s[b->n++] = (char)c;
  }
  b->s[b->n] = 0;
  return 0;
}

static int stop_after_first(void *user, const char *piece, size_t len) {
  (void)piece;
  (void)len;
  ++*(int *)user;
  return 1;
}

static void *generate_thread(void *arg) {
  char *receipt = NULL;
  size_t bytes = 0;
  cocoon_status s = cocoon_generate(model, (const char *)arg, "{\"max_tokens\": 6, \"raw\": true}",
                                    count_pieces, &bytes, &receipt);
  CHECK(s == COCOON_OK, "thread generate: %d", s);
  char *report = NULL;
  s = cocoon_verify_receipt(receipt, "{\"allow_dev\": true}", &report);
  CHECK(s == COCOON_OK, "thread verify: %d", s);
  cocoon_string_free(report);
  cocoon_string_free(receipt);
  return NULL;
}

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc((size_t)n);
  *len = fread(buf, 1, (size_t)n, f);
  fclose(f);
  return buf;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s MODEL_DIR TDX_QUOTE TDX_COLLATERAL GPU_EVIDENCE_JSON GPU_COLLATERAL_DIR\n", argv[0]);
    return 2;
  }
  dir = argv[1];
  char *out = NULL;

  CHECK(strlen(cocoon_version()) > 0, "version");

  /* pin */
  CHECK(cocoon_pin(dir, &pin) == COCOON_OK && strlen(pin) == 64, "pin");
  CHECK(cocoon_pin(NULL, &out) == COCOON_ERR_INVALID_ARGUMENT, "pin NULL dir");
  CHECK(cocoon_last_error() != NULL && strstr(cocoon_last_error(), "dir"), "message names dir");
  CHECK(cocoon_pin(dir, NULL) == COCOON_ERR_INVALID_ARGUMENT, "pin NULL out");
  CHECK(cocoon_pin("/nonexistent/model", &out) == COCOON_ERR_IO, "pin missing dir");

  /* open: wrong pin, malformed pin, bad options, missing dir, then right */
  char wrong[65];
  memcpy(wrong, pin, 65);
  wrong[0] = wrong[0] == '0' ? '1' : '0';
  cocoon_model *m = NULL;
  CHECK(cocoon_model_open(dir, wrong, "{\"attest\":\"dev\"}", &m) == COCOON_ERR_PIN_MISMATCH && m == NULL, "wrong pin");
  CHECK(cocoon_model_open(dir, "abc", "{\"attest\":\"dev\"}", &m) == COCOON_ERR_INVALID_ARGUMENT, "malformed pin");
  CHECK(cocoon_model_open("/nonexistent/model", pin, "{\"attest\":\"dev\"}", &m) == COCOON_ERR_IO, "missing dir");
  CHECK(cocoon_model_open(dir, pin, "{\"atest\":\"dev\"}", &m) == COCOON_ERR_INVALID_ARGUMENT, "unknown key");
  CHECK(strstr(cocoon_last_error(), "atest") != NULL, "message names the key");
  CHECK(cocoon_model_open(dir, pin, "{\"threads\":\"many\"}", &m) == COCOON_ERR_INVALID_ARGUMENT, "wrong type");
  CHECK(cocoon_model_open(dir, pin, "not json", &m) == COCOON_ERR_INVALID_ARGUMENT, "bad json");
  CHECK(cocoon_model_open(NULL, pin, NULL, &m) == COCOON_ERR_INVALID_ARGUMENT, "NULL dir");
  CHECK(cocoon_model_open(dir, NULL, NULL, &m) == COCOON_ERR_INVALID_ARGUMENT, "NULL pin");
  CHECK(cocoon_model_open(dir, pin, NULL, NULL) == COCOON_ERR_INVALID_ARGUMENT, "NULL out");
  CHECK(cocoon_model_open(dir, pin, "{\"backend\":\"gpu\"}", &m) == COCOON_ERR_INVALID_ARGUMENT &&
            strstr(cocoon_last_error(), "backend"), "unknown backend named");
  /* backend cuda: a handle where a GPU is usable, else COCOON_ERR_BACKEND saying why */
  cocoon_status cs = cocoon_model_open(dir, pin, "{\"attest\":\"dev\",\"backend\":\"cuda\"}", &m);
  int no_gpu = cs == COCOON_ERR_BACKEND;
  CHECK((cs == COCOON_OK && m) || (no_gpu && m == NULL && strstr(cocoon_last_error(), "CUDA")),
        "backend cuda: %d %s", cs, cs == COCOON_OK ? "" : cocoon_last_error());
  if (cs == COCOON_OK) {
    cocoon_model_free(m);
    m = NULL;
  }
  CHECK(cocoon_model_open(dir, pin, "{\"attest\":\"dev\",\"threads\":\"2\"}", &model) == COCOON_OK && model, "open");
  CHECK(cocoon_last_error() == NULL, "no error after success");

  /* generate with callback, receipt verified, tampered receipt rejected, dev gated */
  size_t bytes = 0;
  char *receipt = NULL;
  cocoon_status s = cocoon_generate(model, "Hello", "{\"max_tokens\": 12, \"raw\": true, \"seed\": \"7\", \"nonce\": \"abcd\"}",
                                    count_pieces, &bytes, &receipt);
  CHECK(s == COCOON_OK && receipt != NULL && bytes > 0, "generate: %d, %zu bytes", s, bytes);
  if (no_gpu) CHECK(receipt && strstr(receipt, "\"backend\":\"cpu\""), "backend auto ran on the CPU");
  char *report = NULL;
  CHECK(cocoon_verify_receipt(receipt, "{\"allow_dev\": true}", &report) == COCOON_OK, "verify");
  CHECK(report && strstr(report, "\"verdict\":\"ok\""), "report ok: %s", report ? report : "");
  cocoon_string_free(report);
  report = NULL;
  CHECK(cocoon_verify_receipt(receipt, NULL, &report) == COCOON_ERR_REJECTED, "dev without allow_dev");
  CHECK(report && strstr(report, "dev evidence proves nothing"), "report says why");
  cocoon_string_free(report);
  report = NULL;
  char *tampered = strdup(receipt);
  char *tokens = strstr(tampered, "\"seed\":7");
  CHECK(tokens != NULL, "seed in receipt");
  if (tokens) tokens[7] = '8';
  CHECK(cocoon_verify_receipt(tampered, "{\"allow_dev\": true}", &report) == COCOON_ERR_REJECTED, "tampered");
  cocoon_string_free(report);
  report = NULL;
  free(tampered);
  CHECK(cocoon_verify_receipt("{\"version\": 1}", NULL, &report) == COCOON_ERR_INVALID_ARGUMENT && report == NULL, "malformed receipt");
  CHECK(cocoon_verify_receipt(NULL, NULL, &report) == COCOON_ERR_INVALID_ARGUMENT, "NULL receipt");
  CHECK(cocoon_verify_receipt(receipt, NULL, NULL) == COCOON_ERR_INVALID_ARGUMENT, "NULL report out");
  CHECK(cocoon_verify_receipt(receipt, "{\"allow_dev\": 1}", &report) == COCOON_ERR_INVALID_ARGUMENT, "wrong type");
  cocoon_string_free(receipt);
  receipt = NULL;

  /* early stop still yields a receipt */
  int calls = 0;
  CHECK(cocoon_generate(model, "Hello", "{\"max_tokens\": 200, \"raw\": true}", stop_after_first, &calls, &receipt) == COCOON_OK, "early stop");
  CHECK(calls == 1 && receipt && strstr(receipt, "\"finish\":\"cancelled\""), "cancelled receipt");
  cocoon_string_free(receipt);
  receipt = NULL;

  /* Spot-check replay from C: an answer's text and its receipt give a report (whether the tiny
     model's text tokenizes back to the same ids is not assured: the exact path, with output
     ids, is tested in ffi/tests/replay.rs); a changed answer is inconsistent; malformed jobs
     and NULLs are refused without a report. */
  {
    struct text_buf text = {{0}, 0};
    char *r = NULL, *rep = NULL;
    CHECK(cocoon_generate(model, "Hello", "{\"max_tokens\": 10, \"raw\": true, \"seed\": 3}", collect_json, &text, &r) == COCOON_OK, "generate for replay");
    size_t jl = strlen(r) + text.n + 256;
    char *job = malloc(jl);
    snprintf(job, jl, "{\"prompt\": \"Hello\", \"raw\": true, \"output\": \"%s\", \"receipt\": %s}", text.s, r);
    cocoon_status rs = cocoon_replay(model, job, NULL, &rep);
    CHECK((rs == COCOON_OK || rs == COCOON_ERR_REJECTED) && rep && strstr(rep, "\"verdict\":"), "replay report: %s", rep ? rep : cocoon_last_error());
    cocoon_string_free(rep);
    rep = NULL;
    snprintf(job, jl, "{\"prompt\": \"Hello\", \"raw\": true, \"output\": \"%sX\", \"receipt\": %s}", text.s, r);
    CHECK(cocoon_replay(model, job, "{\"mode\": \"tolerant\"}", &rep) == COCOON_ERR_REJECTED, "changed answer rejected");
    CHECK(rep && strstr(rep, "\"verdict\":\"inconsistent\""), "inconsistent report: %s", rep ? rep : "");
    cocoon_string_free(rep);
    rep = NULL;
    CHECK(cocoon_replay(model, "{\"prompt\": \"Hello\"}", NULL, &rep) == COCOON_ERR_INVALID_ARGUMENT && rep == NULL, "no answer");
    CHECK(cocoon_replay(model, "{\"prompt\": \"Hello\", \"output\": \"x\"}", "{\"mode\": \"loose\"}", &rep) == COCOON_ERR_INVALID_ARGUMENT, "bad mode");
    CHECK(cocoon_replay(NULL, "{}", NULL, &rep) == COCOON_ERR_INVALID_ARGUMENT, "NULL model");
    CHECK(cocoon_replay(model, "{\"prompt\": \"Hello\", \"output\": \"x\"}", NULL, NULL) == COCOON_ERR_INVALID_ARGUMENT, "NULL report");
    free(job);
    cocoon_string_free(r);
  }

  /* generate argument checks */
  CHECK(cocoon_generate(NULL, "x", NULL, NULL, NULL, NULL) == COCOON_ERR_INVALID_ARGUMENT, "NULL model");
  CHECK(cocoon_generate(model, NULL, NULL, NULL, NULL, NULL) == COCOON_ERR_INVALID_ARGUMENT, "NULL prompt");
  CHECK(cocoon_generate(model, "x", "{\"max_tokens\": 0, \"raw\": true}", NULL, NULL, NULL) == COCOON_ERR_INVALID_ARGUMENT, "max_tokens 0");
  CHECK(cocoon_generate(model, "x", "{\"temperature\": -1, \"raw\": true}", NULL, NULL, NULL) == COCOON_ERR_INVALID_ARGUMENT, "negative temperature");
  CHECK(cocoon_generate(model, "x", "{\"bogus\": 1}", NULL, NULL, NULL) == COCOON_ERR_INVALID_ARGUMENT, "unknown param");
  CHECK(cocoon_generate(model, "x", "{\"raw\": true, \"max_tokens\": 2}", NULL, NULL, NULL) == COCOON_OK, "no callback, no receipt");

  /* attest verify: junk, a real TDX quote (chain unverified in this build), NULLs */
  unsigned char junk[16] = {1, 2, 3};
  CHECK(cocoon_attest_verify(junk, sizeof junk, NULL, &report) == COCOON_ERR_INVALID_ARGUMENT, "junk evidence");
  size_t qlen = 0;
  unsigned char *quote = read_file(argv[2], &qlen);
  CHECK(quote != NULL, "read %s", argv[2]);
  if (quote) {
    CHECK(cocoon_attest_verify(quote, qlen, NULL, &report) == COCOON_ERR_REJECTED, "real quote");
    CHECK(report && strstr(report, "\"platform\":\"tdx\"") && strstr(report, "\"report_data\":\"9a9d48e7"), "quote report: %s", report ? report : "");
    cocoon_string_free(report);
    report = NULL;
    /* with its DCAP collateral, at its documented time: verified, UpToDate */
    char opts[1024];
    snprintf(opts, sizeof opts, "{\"collateral\": \"%s\", \"at\": \"2025-07-19T10:00:34Z\"}", argv[3]);
    CHECK(cocoon_attest_verify(quote, qlen, opts, &report) == COCOON_OK, "quote with collateral: %s", report ? report : "");
    CHECK(report && strstr(report, "\"tcb_status\":\"UpToDate\""), "UpToDate");
    cocoon_string_free(report);
    report = NULL;
    CHECK(cocoon_attest_verify(quote, qlen, "{\"at\": \"yesterday\"}", &report) == COCOON_ERR_INVALID_ARGUMENT, "bad time");
    free(quote);
  }
  /* NVIDIA GPU evidence (the real Hopper set): ok with its RIMs and OCSP responses at their
     time and its nonce; rejected with another nonce; without collateral, rejected by name. */
  size_t glen = 0;
  unsigned char *gpu = read_file(argv[4], &glen);
  CHECK(gpu != NULL, "read %s", argv[4]);
  if (gpu) {
    char opts[2048];
    snprintf(opts, sizeof opts,
             "{\"collateral\": \"%s\", \"at\": \"2025-10-24T12:00:00Z\", \"nonce\": "
             "\"931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb\"}",
             argv[5]);
    CHECK(cocoon_attest_verify(gpu, glen, opts, &report) == COCOON_OK, "GPU evidence: %s", report ? report : "");
    CHECK(report && strstr(report, "\"matched\":33") && strstr(report, "\"ocsp\":\"checked\""), "GPU report: %s", report ? report : "");
    cocoon_string_free(report);
    report = NULL;
    snprintf(opts, sizeof opts, "{\"collateral\": \"%s\", \"at\": \"2025-10-24T12:00:00Z\", \"nonce\": \"%064d\"}", argv[5], 0);
    CHECK(cocoon_attest_verify(gpu, glen, opts, &report) == COCOON_ERR_REJECTED, "GPU evidence, another nonce");
    CHECK(report && strstr(report, "is not the expected"), "GPU nonce reason: %s", report ? report : "");
    cocoon_string_free(report);
    report = NULL;
    CHECK(cocoon_attest_verify(gpu, glen, NULL, &report) == COCOON_ERR_REJECTED, "GPU evidence without collateral");
    CHECK(report && strstr(report, "no driver RIM"), "GPU reason: %s", report ? report : "");
    cocoon_string_free(report);
    report = NULL;
    CHECK(cocoon_attest_verify(gpu, glen, "{\"report_data\": \"00\"}", &report) == COCOON_ERR_INVALID_ARGUMENT, "report_data on GPU evidence");
    free(gpu);
  }
  CHECK(cocoon_attest_verify(NULL, 10, NULL, &report) == COCOON_ERR_INVALID_ARGUMENT, "NULL evidence");
  CHECK(cocoon_attest_verify(junk, sizeof junk, NULL, NULL) == COCOON_ERR_INVALID_ARGUMENT, "NULL report");

  /* 4 threads on one handle */
  pthread_t t[4];
  const char *prompts[4] = {"one", "two", "three", "four"};
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, generate_thread, (void *)prompts[i]);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);

  /* Sealed requests: worker key, seal (client), answer (worker), unseal (client). */
  {
    char *key = NULL, *sealed = NULL, *secret = NULL, *response = NULL, *plain = NULL;
    CHECK(cocoon_worker_key(model, &key) == COCOON_ERR_INVALID_ARGUMENT, "no attested key without attest_key");
    cocoon_model *km = NULL;
    CHECK(cocoon_model_open(dir, pin, "{\"attest\":\"dev\",\"attest_key\":true,\"backend\":\"cpu\"}", &km) == COCOON_OK,
          "open with attest_key");
    CHECK(cocoon_worker_key(km, &key) == COCOON_OK && key && strstr(key, "\"hpke\":\"04"), "worker key has hpke");
    const char *req = "{\"prompt\":\"Hello sealed\",\"raw\":true,\"params\":{\"max_tokens\":4},\"job_id\":\"c-1\"}";
    CHECK(cocoon_seal(key, req, NULL, &sealed, &secret) == COCOON_ERR_REJECTED && sealed == NULL,
          "dev key refused without allow_dev");
    CHECK(cocoon_seal(key, req, "{\"allow_dev\":true}", &sealed, &secret) == COCOON_OK && sealed && secret, "seal");
    CHECK(cocoon_answer_sealed(km, sealed, &response) == COCOON_OK && response, "answer sealed: %s",
          cocoon_last_error() ? cocoon_last_error() : "");
    CHECK(response && strstr(response, "Hello sealed") == NULL, "the response is not plaintext");
    CHECK(cocoon_unseal(secret, response, &plain) == COCOON_OK && plain, "unseal");
    CHECK(plain && strstr(plain, "\"request_sha256\"") && strstr(plain, "\"job_id\":\"c-1\""), "receipt names the request");
    /* A flipped ciphertext byte: one generic refusal, and the handle keeps working. */
    char *bad = strdup(sealed);
    char *ct = strstr(bad, "\"ciphertext\":\"");
    if (ct) { ct += 14; *ct = (*ct == 'A') ? 'B' : 'A'; }
    char *r2 = NULL;
    CHECK(cocoon_answer_sealed(km, bad, &r2) == COCOON_ERR_INVALID_ARGUMENT && r2 == NULL, "flipped byte refused");
    CHECK(cocoon_last_error() && strcmp(cocoon_last_error(), "the sealed request could not be opened") == 0,
          "one generic message: %s", cocoon_last_error() ? cocoon_last_error() : "");
    free(bad);
    /* Another request's secret does not open this answer. */
    char *sealed2 = NULL, *secret2 = NULL, *plain2 = NULL;
    CHECK(cocoon_seal(key, req, "{\"allow_dev\":true}", &sealed2, &secret2) == COCOON_OK, "seal again");
    CHECK(cocoon_unseal(secret2, response, &plain2) == COCOON_ERR_REJECTED && plain2 == NULL, "other secret refused");
    CHECK(cocoon_answer_sealed(km, sealed2, &r2) == COCOON_OK, "still serving");
    cocoon_string_free(r2);
    cocoon_string_free(sealed2);
    cocoon_string_free(secret2);
    cocoon_string_free(key);
    cocoon_string_free(sealed);
    cocoon_string_free(secret);
    cocoon_string_free(response);
    cocoon_string_free(plain);
    cocoon_model_free(km);
  }
  cocoon_model_free(model);
  cocoon_model_free(NULL);
  cocoon_string_free(NULL);
  cocoon_string_free(pin);
  printf("c-api: %d passed, %d failed\n", checks - failures, failures);
  return failures ? 1 : 0;
}
