// The fake cuDNN's convolution arithmetic (fake_cudnn.cpp), which its
// legacy API and its graph API (fake_cudnn_graph.cpp) both run.
#ifndef FAKE_CONV_H
#define FAKE_CONV_H

#include <cudnn.h>

#include <stddef.h>

// A handle: its serial (handles created before it, from the process id on)
// says which of two algorithms or engines its measurements find faster, as
// close timings vary from one run to the next.
struct cudnnContext {
    int serial;
};

// The engines the fake graph API runs faster than the host emulates them
// take seconds off the event clock (fake_cudart.cpp), so that timing them
// ranks them as the fake means to.
extern "C" void fake_event_clock_credit(double seconds);

// One convolution's shapes, checked against each other.
struct conv_shape {
    int n, c, h, w; // input
    int k, r, s;    // filter: k outputs, r x s window
    int oh, ow;     // output
    int ph, pw, u, v, dh, dw;
    size_t rsc() const { return (size_t)r * s * c; }
    size_t pixels() const { return (size_t)oh * ow; }
};

// The three passes, in the forward's roles: x (dx for backward data), w
// (dw for backward filter), y (dy for both backward passes).
enum fake_pass { PASS_FWD, PASS_BWD_DATA, PASS_BWD_FILTER };

// Each pass by the legacy function's name (FAKE_CUDNN_FAIL names them so).
extern const char *const PASS_CALL[3];

bool supported_type(cudnnDataType_t dt); // float, half, bfloat16
int conv_out(int in, int pad, int k, int dil, int stride);

// Pass p of convolution s on tensors of type dt; its output = alpha *
// result + beta * output. reverse: backward filter sums the images last
// to first (another algorithm's order).
cudnnStatus_t run_pass(fake_pass p, const conv_shape &s, cudnnDataType_t dt, const void *alpha, const void *beta,
                       void *x, void *w, void *y, bool reverse);

#endif
