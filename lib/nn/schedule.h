// The learning-rate schedule of the recipe: cosine annealing stepped once per
// epoch, the closed form of torch.optim.lr_scheduler.CosineAnnealingLR:
//   lr(e) = eta_min + (base - eta_min) (1 + cos(pi e / t_max)) / 2
// for epoch e = 0, 1, ... (0 = the first epoch, at the base rate).
#ifndef FU_NN_SCHEDULE_H
#define FU_NN_SCHEDULE_H

#define FU_COSINE_ETA_MIN 1e-6

double fu_cosine_lr(double base, double eta_min, int t_max, int epoch);

#endif
