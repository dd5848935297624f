/* Open a pinned model, stream an answer, print and verify its receipt.
 *   cc -Iffi/include ffi/examples/generate.c -Ltarget/release -lcocoon -o generate
 *   LD_LIBRARY_PATH=target/release ./generate MODEL_DIR PIN "What is the capital of France?"
 * Uses dev evidence (an insecure stand-in) so that it runs without a TEE; on a TDX or SNP
 * machine use {"attest": "auto"}.                                                         */
#include <stdio.h>

#include "cocoon.h"

static int print_piece(void *user, const char *piece, size_t len) {
  (void)user;
  fwrite(piece, 1, len, stdout);
  fflush(stdout);
  return 0; /* non-zero would stop generation */
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s MODEL_DIR PIN PROMPT\n", argv[0]);
    return 2;
  }
  cocoon_model *model = NULL;
  if (cocoon_model_open(argv[1], argv[2], "{\"attest\": \"dev\"}", &model) != COCOON_OK) {
    fprintf(stderr, "open: %s\n", cocoon_last_error());
    return 2;
  }
  char *receipt = NULL;
  cocoon_status s = cocoon_generate(model, argv[3], "{\"max_tokens\": 64}", print_piece, NULL, &receipt);
  printf("\n");
  if (s != COCOON_OK) {
    fprintf(stderr, "generate: %s\n", cocoon_last_error());
    cocoon_model_free(model);
    return 2;
  }
  printf("receipt: %s\n", receipt);
  char *report = NULL;
  s = cocoon_verify_receipt(receipt, "{\"allow_dev\": true}", &report);
  printf("verification (%s): %s\n", s == COCOON_OK ? "accepted" : "rejected", report ? report : cocoon_last_error());
  cocoon_string_free(report);
  cocoon_string_free(receipt);
  cocoon_model_free(model);
  return s == COCOON_OK ? 0 : 1;
}
