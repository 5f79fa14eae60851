/* Single-core float32 FMA throughput: the CPU's peak, measured.
 *
 *   cc -O2 -march=native -o fma_peak fma_peak.c && ./fma_peak [seconds]
 *
 * Twelve independent chains of fused multiply-adds on the widest vectors the
 * compiler targets (16 floats with AVX-512, 8 with AVX2): enough chains to
 * cover the FMA latency on every x86 core of the last decade, so the loop runs
 * at the FMA units' throughput. Prints the GFLOP/s of one core (2 per lane
 * per FMA), the vector width in floats and a checksum that keeps the work
 * alive; run one copy per core at once for the machine's peak.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else
#define LANES 4
#endif
#define CHAINS 12

typedef float vec __attribute__((vector_size(LANES * sizeof(float))));

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define ALL(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define DECL(c) vec acc##c = a * (float)(c + 1);
#define STEP(c) acc##c = acc##c * a + b;
#define SUM(c) for (int i = 0; i < LANES; i++) sink += acc##c[i];

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 2.0;
  vec a, b;
  for (int i = 0; i < LANES; i++) { a[i] = 0.999999f; b[i] = 1e-7f; }
  ALL(DECL)
  const long inner = 1L << 20;
  long iters = 0;
  double t0 = now(), t;
  do {
    for (long k = 0; k < inner; k++) { ALL(STEP) }
    iters += inner;
    t = now() - t0;
  } while (t < seconds);
  float sink = 0;
  ALL(SUM)
  double flops = 2.0 * LANES * CHAINS * (double)iters;
  printf("%.2f %d %f\n", flops / t / 1e9, LANES, sink);
  return 0;
}
