# The R `nlme` peer of mgjax's population engine on an ODE model
# (experiments/benchmarks/bench_population.py --model minimal): Bergman's minimal model of IVGTT
# glucose with each subject's measured insulin as the input, solved by deSolve's lsoda, fitted
# by Lindstrom–Bates (nlme) with mgjax's parameterisation, so the estimates compare one to one.
#
#   Rscript experiments/benchmarks/nlme_minimal_model.R --data ivgtt.csv --out nlme.json \
#       [--sg 0.02] [--si 4] [--p2 0.04] [--g0 240] [--rtol 1e-8] [--atol 1e-8]
#
# Data: ID, TIME (min), GLU (mg/dL; empty where not sampled), INS (µU/mL), GB, IB (basal glucose
# and insulin). Model (mgjax's `ivgtt_glucose`):
#   dG/dt = -(SG + X) G + SG GB,  dX/dt = -p2 (X - SI 1e-4 (I(t) - IB)),  G(0) = G0, X(0) = 0,
#   I(t) linear between the subject's insulin samples (held after the last);
#   fixed effects lsg, lsi, lp2, lg0 (logs); diagonal random effects (pdDiag) on lsg, lsi, lg0;
#   additive residual error (nlme's default); maximum likelihood (method = "ML").
# Each subject is solved by its own lsoda call, with the forward sensitivity equations of its
# four parameters alongside (10 states); the model returns them as the "gradient" attribute
# (nlme's own finite differences of an adaptive ODE solution are too noisy: PNLS stops with
# "step halving factor reduced below minimum"). Solving all subjects of a call in one lsoda
# call, the right-hand side vectorised over them, was 2.4x slower at 50 subjects (26.1 vs
# 10.8 s): one step size for all makes every subject take the smallest subject's steps.
# Output (JSON): as nlme_peer.R.
suppressPackageStartupMessages({library(nlme); library(deSolve)})

args <- commandArgs(trailingOnly = TRUE)
opt <- list(data = NULL, out = NULL, sg = "0.02", si = "4", p2 = "0.04", g0 = "240",
            rtol = "1e-8", atol = "1e-8")
i <- 1
while (i <= length(args)) {
  key <- sub("^--", "", args[i])
  if (!(key %in% names(opt)) || i == length(args)) stop("usage: see the header")
  opt[[key]] <- args[i + 1]
  i <- i + 2
}
if (is.null(opt$data) || is.null(opt$out)) stop("--data and --out are required")
RTOL <- as.numeric(opt$rtol)
ATOL <- as.numeric(opt$atol)

raw <- read.csv(opt$data, stringsAsFactors = FALSE)
raw <- raw[order(raw$ID, raw$TIME), ]
ids <- unique(raw$ID)
# insulin per subject on the common knot times (every subject sampled at the same times)
KNOTS <- sort(unique(raw$TIME[!is.na(raw$INS)]))
INS <- t(vapply(ids, function(s) {
  d <- raw[raw$ID == s & !is.na(raw$INS), ]
  if (!isTRUE(all.equal(d$TIME, KNOTS))) stop("subjects must share their insulin sample times")
  d$INS
}, numeric(length(KNOTS))))
rownames(INS) <- as.character(ids)
GB <- tapply(raw$GB, raw$ID, function(x) x[1])[as.character(ids)]
IB <- tapply(raw$IB, raw$ID, function(x) x[1])[as.character(ids)]
names(GB) <- names(IB) <- as.character(ids)

obs <- raw[!is.na(raw$GLU), ]
ivgtt <- groupedData(GLU ~ TIME | ID,
                     data = data.frame(ID = factor(obs$ID, levels = ids), TIME = obs$TIME,
                                       GLU = obs$GLU))

insulin_at <- function(t, ins) {
  k <- findInterval(t, KNOTS, rightmost.closed = TRUE)
  if (k >= length(KNOTS)) return(ins[, length(KNOTS)])
  w <- (t - KNOTS[k]) / (KNOTS[k + 1] - KNOTS[k])
  ins[, k] * (1 - w) + ins[, k + 1] * w
}

# states: G, X, then the forward sensitivities dG/dθ, dX/dθ for θ = lsg, lsi, lp2, lg0 (each
# a block of n subjects; n = 1 in the per-subject solves)
rhs <- function(t, y, p) {
  n <- p$n
  block <- function(j) y[(j * n + 1):((j + 1) * n)]
  g <- block(0)
  x <- block(1)
  drive <- p$si * 1e-4 * (insulin_at(t, p$ins) - p$ib)
  d_theta_g <- list(p$sg * (p$gb - g), 0, 0, 0)
  d_theta_x <- list(0, p$p2 * drive, -p$p2 * (x - drive), 0)
  out <- c(-(p$sg + x) * g + p$sg * p$gb, -p$p2 * (x - drive))
  for (j in 1:4) {
    sg_ <- block(2 * j)
    sx_ <- block(2 * j + 1)
    out <- c(out, -(p$sg + x) * sg_ - g * sx_ + d_theta_g[[j]], -p$p2 * sx_ + d_theta_x[[j]])
  }
  list(out)
}

minimal_model <- function(lsg, lsi, lp2, lg0, TIME, ID) {
  key <- as.character(ID)
  subjects <- unique(key)
  value <- numeric(length(key))
  gradient <- matrix(0, length(key), 4, dimnames = list(NULL, c("lsg", "lsi", "lp2", "lg0")))
  for (s in subjects) {
    rows <- which(key == s)
    j <- rows[1]
    p <- list(n = 1, sg = exp(lsg[j]), si = exp(lsi[j]), p2 = exp(lp2[j]), gb = GB[[s]],
              ib = IB[[s]], ins = INS[s, , drop = FALSE])
    g0 <- exp(lg0[j])
    times <- sort(unique(c(0, TIME[rows])))
    out <- lsoda(c(g0, 0, 0, 0, 0, 0, 0, 0, g0, 0), times, rhs, p, rtol = RTOL, atol = ATOL,
                 tcrit = max(times), maxsteps = 50000)
    at <- match(TIME[rows], times)
    value[rows] <- out[at, 2]
    gradient[rows, ] <- out[at, c(4, 6, 8, 10)]
  }
  attr(value, "gradient") <- gradient
  value
}

start <- c(lsg = log(as.numeric(opt$sg)), lsi = log(as.numeric(opt$si)),
           lp2 = log(as.numeric(opt$p2)), lg0 = log(as.numeric(opt$g0)))
t0 <- proc.time()[["elapsed"]]
fit <- nlme(
  GLU ~ minimal_model(lsg, lsi, lp2, lg0, TIME, ID),
  data = ivgtt,
  fixed = lsg + lsi + lp2 + lg0 ~ 1,
  random = pdDiag(lsg + lsi + lg0 ~ 1),
  groups = ~ID,
  start = start,
  method = "ML",
  control = nlmeControl(maxIter = 200, pnlsMaxIter = 20, msMaxIter = 200, tolerance = 1e-6)
)
seconds <- proc.time()[["elapsed"]] - t0

table <- summary(fit)$tTable
sd <- sqrt(diag(pdMatrix(fit$modelStruct$reStruct[[1]]))) * fit$sigma
ap <- fit$apVar
sd_se_log <- rep(NA_real_, 3)
sigma_se_log <- NA_real_
if (is.matrix(ap)) {
  k <- nrow(ap)
  sd_se_log <- sqrt(pmax(diag(ap)[1:3], 0))
  sigma_se_log <- sqrt(ap[k, k])
}
peak_rss_mib <- tryCatch({
  hwm <- grep("^VmHWM:", readLines("/proc/self/status"), value = TRUE)
  as.numeric(gsub("[^0-9]", "", hwm)) / 1024
}, error = function(e) NA_real_, warning = function(w) NA_real_)

num <- function(x) ifelse(is.finite(x), trimws(formatC(x, digits = 17, format = "g")), "null")
obj <- function(keys, values) paste0("{", paste0('"', keys, '": ', values, collapse = ", "), "}")
fixed <- vapply(seq_len(nrow(table)), function(j) {
  obj(c("estimate", "se"), c(num(table[j, "Value"]), num(table[j, "Std.Error"])))
}, "")
json <- obj(
  c("fixed", "omega_sd", "omega_sd_se_log", "sigma", "sigma_se_log", "minus2loglik",
    "seconds", "peak_rss_mib", "iterations", "subjects", "observations", "r_version",
    "nlme_version", "desolve_version"),
  c(obj(c("lsg", "lsi", "lp2", "lg0"), fixed),
    obj(c("sg", "si", "g0"), num(unname(sd))),
    obj(c("sg", "si", "g0"), num(sd_se_log)),
    num(fit$sigma), num(sigma_se_log), num(-2 * as.numeric(logLik(fit))), num(seconds),
    num(peak_rss_mib), num(fit$numIter), num(length(ids)), num(nrow(obs)),
    paste0('"', R.version.string, '"'), paste0('"', as.character(packageVersion("nlme")), '"'),
    paste0('"', as.character(packageVersion("deSolve")), '"')))
writeLines(json, opt$out)
cat(sprintf("nlme (minimal model): %d subjects, %d observations, %.2f s, -2LL %.4f\n",
            length(ids), nrow(obs), seconds, -2 * as.numeric(logLik(fit))))
