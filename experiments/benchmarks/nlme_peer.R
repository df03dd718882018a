# The R `nlme` peer of mgjax's population engine (experiments/benchmarks/bench_population.py):
# the one-compartment oral model fitted to a NONMEM-style CSV by Lindstrom–Bates (nlme), with
# mgjax's parameterisation, so the estimates compare one to one.
#
#   Rscript experiments/benchmarks/nlme_peer.R --data pk.csv --out nlme.json \
#       [--ka 1] [--cl 5] [--v 50] [--beta 0] [--reference 70] [--gradient analytic|numeric]
#
# Data: ID, TIME (h), DV (mg/L), MDV, EVID, AMT (mg), CMT, WT (kg); EVID 1 rows are oral doses,
# EVID 0 rows with MDV 0 observations (any CMT: the model has one observed compartment).
# Model (mgjax's `concentration`, superposition over each subject's doses):
#   C(t) = sum_d AMT_d * ka / (V * (ka - ke)) * (exp(-ke*tau) - exp(-ka*tau)),  ke = CL/V,
#   tau = t - t_d >= 0 (the ka = ke limit handled), ka 1/h, CL L/h, V L;
#   lka = log ka, lcl = log CL + beta * log(WT/reference), lv = log V (fixed effects
#   lka, lcl.(Intercept), lcl.lwt = beta, lv); diagonal random effects (pdDiag) on lka, lcl,
#   lv; additive residual error (nlme's default); maximum likelihood (method = "ML").
# The model function returns its exact gradient (R's deriv) as the "gradient" attribute, which
# nlme's PNLS step uses instead of finite differences (--gradient numeric: without it).
# Output (JSON): fixed effects with SEs, random-effect SDs (log-scale SEs from nlme's apVar),
# sigma, -2 log-likelihood, seconds to estimate (the nlme() call), peak memory, iterations,
# versions.
suppressPackageStartupMessages(library(nlme))

args <- commandArgs(trailingOnly = TRUE)
opt <- list(data = NULL, out = NULL, ka = "1", cl = "5", v = "50", beta = "0",
            reference = "70", gradient = "analytic")
i <- 1
while (i <= length(args)) {
  key <- sub("^--", "", args[i])
  if (!(key %in% names(opt)) || i == length(args)) stop("usage: see the header of nlme_peer.R")
  opt[[key]] <- args[i + 1]
  i <- i + 2
}
if (is.null(opt$data) || is.null(opt$out)) stop("--data and --out are required")
if (!(opt$gradient %in% c("analytic", "numeric"))) stop("--gradient: analytic or numeric")

raw <- read.csv(opt$data, na.strings = c(".", ""), stringsAsFactors = FALSE)
names(raw) <- toupper(names(raw))
doses <- raw[raw$EVID == 1, ]
obs <- raw[raw$EVID == 0 & raw$MDV == 0 & !is.na(raw$DV), ]
if (nrow(obs) == 0) stop("no observations")

# each observation's subject's doses, padded to the largest count (zero amounts count nothing)
by_subject <- split(doses[, c("TIME", "AMT")], doses$ID)
n_dose <- max(vapply(by_subject, nrow, 1L))
key <- as.character(obs$ID)
if (any(!(key %in% names(by_subject)))) stop("a subject with observations has no dose")
DT <- t(vapply(key, function(s) { d <- by_subject[[s]]$TIME; c(d, rep(0, n_dose - length(d))) },
               numeric(n_dose)))
DA <- t(vapply(key, function(s) { d <- by_subject[[s]]$AMT; c(d, rep(0, n_dose - length(d))) },
               numeric(n_dose)))
dim(DT) <- dim(DA) <- c(nrow(obs), n_dose)
OBS_TIME <- obs$TIME

wt <- tapply(raw$WT, raw$ID, function(x) x[!is.na(x)][1])
pk <- data.frame(ID = factor(obs$ID, levels = unique(obs$ID)), ROW = seq_len(nrow(obs)),
                 DV = obs$DV, LWT = log(wt[key] / as.numeric(opt$reference)))
pk <- groupedData(DV ~ ROW | ID, data = pk)

# one dose's concentration and its derivatives in (lka, lcl, lv)
dose_term <- deriv(
  ~ amt * exp(lka) / (exp(lv) * (exp(lka) - exp(lcl - lv))) *
    (exp(-exp(lcl - lv) * tau) - exp(-exp(lka) * tau)),
  c("lka", "lcl", "lv"), function.arg = c("amt", "tau", "lka", "lcl", "lv"))
# the ka = ke limit: amt * ka / V * tau * exp(-ke * tau)
dose_limit <- deriv(
  ~ amt * exp(lka) / exp(lv) * tau * exp(-exp(lcl - lv) * tau),
  c("lka", "lcl", "lv"), function.arg = c("amt", "tau", "lka", "lcl", "lv"))

one_compartment <- function(ROW, lka, lcl, lv) {
  n <- length(ROW)
  lka <- rep_len(lka, n); lcl <- rep_len(lcl, n); lv <- rep_len(lv, n)
  near <- abs(exp(lka) - exp(lcl - lv)) < 1e-7 * exp(lka)
  value <- numeric(n)
  gradient <- matrix(0, n, 3, dimnames = list(NULL, c("lka", "lcl", "lv")))
  for (d in seq_len(n_dose)) {
    tau <- OBS_TIME[ROW] - DT[ROW, d]
    amt <- DA[ROW, d]
    after <- tau >= 0 & amt > 0
    tau[!after] <- 0
    general <- dose_term(amt, tau, lka, lcl, lv)
    g <- attr(general, "gradient")
    v <- as.numeric(general)
    if (any(near)) {
      limit <- dose_limit(amt, tau, lka, lcl, lv)
      v[near] <- limit[near]
      g[near, ] <- attr(limit, "gradient")[near, ]
    }
    v[!after] <- 0
    g[!after, ] <- 0
    value <- value + v
    gradient <- gradient + g
  }
  if (opt$gradient == "analytic") attr(value, "gradient") <- gradient
  value
}

start <- c(lka = log(as.numeric(opt$ka)), lcl = log(as.numeric(opt$cl)),
           lcl.lwt = as.numeric(opt$beta), lv = log(as.numeric(opt$v)))
t0 <- proc.time()[["elapsed"]]
fit <- nlme(
  DV ~ one_compartment(ROW, lka, lcl, lv),
  data = pk,
  fixed = list(lka ~ 1, lcl ~ LWT, lv ~ 1),
  random = pdDiag(lka + lcl + lv ~ 1),
  groups = ~ID,
  start = unname(start),
  method = "ML",
  control = nlmeControl(maxIter = 200, pnlsMaxIter = 20, msMaxIter = 200, tolerance = 1e-6)
)
seconds <- proc.time()[["elapsed"]] - t0

table <- summary(fit)$tTable
fixed_names <- c("lka", "lcl", "lcl_lwt", "lv")  # in nlme's order
# random-effect SDs: pdDiag holds Psi / sigma^2
sd <- sqrt(diag(pdMatrix(fit$modelStruct$reStruct[[1]]))) * fit$sigma
# nlme's approximate covariance of the variance parameters (apVar, on the scale of absolute
# log SDs of the random effects, then lSigma = log sigma): the log SDs' SEs
ap <- fit$apVar
sd_se_log <- rep(NA_real_, 3)
sigma_se_log <- NA_real_
if (is.matrix(ap)) {
  k <- nrow(ap)
  sd_se_log <- sqrt(pmax(diag(ap)[1:3], 0))
  sigma_se_log <- sqrt(ap[k, k])
  stopifnot(max(abs(exp(attr(ap, "Pars")[1:3]) / sd - 1)) < 1e-6)
}

# the process's peak resident memory (Linux: VmHWM, which starts afresh at exec, unlike the
# parent's getrusage view of a child), MiB
peak_rss_mib <- tryCatch({
  hwm <- grep("^VmHWM:", readLines("/proc/self/status"), value = TRUE)
  as.numeric(gsub("[^0-9]", "", hwm)) / 1024
}, error = function(e) NA_real_, warning = function(w) NA_real_)

num <- function(x) ifelse(is.finite(x), trimws(formatC(x, digits = 17, format = "g")), "null")
obj <- function(keys, values) {
  paste0("{", paste0('"', keys, '": ', values, collapse = ", "), "}")
}
fixed <- vapply(seq_len(nrow(table)), function(j) {
  obj(c("estimate", "se"), c(num(table[j, "Value"]), num(table[j, "Std.Error"])))
}, "")
json <- obj(
  c("fixed", "omega_sd", "omega_sd_se_log", "sigma", "sigma_se_log", "minus2loglik",
    "seconds", "peak_rss_mib", "iterations", "subjects", "observations", "gradient",
    "r_version", "nlme_version"),
  c(obj(fixed_names, fixed),
    obj(c("ka", "cl", "v"), num(unname(sd))),
    obj(c("ka", "cl", "v"), num(sd_se_log)),
    num(fit$sigma), num(sigma_se_log), num(-2 * as.numeric(logLik(fit))), num(seconds),
    num(peak_rss_mib), num(fit$numIter), num(length(unique(obs$ID))), num(nrow(obs)),
    paste0('"', opt$gradient, '"'), paste0('"', R.version.string, '"'),
    paste0('"', as.character(packageVersion("nlme")), '"')))
writeLines(json, opt$out)
cat(sprintf("nlme: %d subjects, %d observations, %.2f s, -2LL %.4f\n",
            length(unique(obs$ID)), nrow(obs), seconds, -2 * as.numeric(logLik(fit))))
