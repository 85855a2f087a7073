// Helpers of the emulated-kernel tests: seeded random data, relative errors,
// and the "ok - ..." / "not ok - ..." lines (tests/run.sh counts them).
#ifndef TESTS_CUDA_EMU_COMPARE_H
#define TESTS_CUDA_EMU_COMPARE_H

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

static int failures;

// Prints the check's line with its measured error; counts a failure.
static bool report(bool ok, const char *what, double err) {
    printf("%s - %s (rel %.2g)\n", ok ? "ok" : "not ok", what, err);
    failures += !ok;
    return ok;
}

static bool report(bool ok, const char *what) {
    printf("%s - %s\n", ok ? "ok" : "not ok", what);
    failures += !ok;
    return ok;
}

// Uniform in [-1, 1), the same sequence on every run (64-bit LCG, top 53 bits).
static double uniform() {
    static uint64_t state = 12345;
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(state >> 11) * (1.0 / 9007199254740992.0) * 2 - 1;
}

static std::vector<float> random_floats(size_t n) {
    std::vector<float> v(n);
    for (float &x : v) x = (float)uniform();
    return v;
}

template <class T> static std::vector<double> to_double(const std::vector<T> &a) {
    return std::vector<double>(a.begin(), a.end());
}

// ||got - want|| / ||want|| (or ||got - want|| where want is all zero);
// infinite where the sizes differ or a value is not finite.
template <class G> static double rel_l2(const G *got, const double *want, size_t n) {
    double diff = 0, norm = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        diff += d * d;
        norm += want[i] * want[i];
    }
    double err = norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
    return std::isfinite(err) ? err : INFINITY;
}

template <class G> static double rel_l2(const std::vector<G> &got, const std::vector<double> &want) {
    return got.size() == want.size() ? rel_l2(got.data(), want.data(), got.size()) : INFINITY;
}

// Checks got against want within tol (relative L2).
template <class G> static bool near(const std::string &what, const std::vector<G> &got,
                                    const std::vector<double> &want, double tol) {
    double err = rel_l2(got, want);
    return report(err <= tol, what.c_str(), err);
}

#endif
