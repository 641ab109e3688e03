// What the new-experiment form knows about Katib: each algorithm's settings with the values
// Katib's suggestion services start from (docs/automl.md), the default trial template, and a
// small YAML writer for the "Edit as YAML" step. No DOM here.

// [name, default, choices?]; an empty default leaves the setting unset (the service decides).
export const ALGORITHMS = {
  random: [["random_state", ""]],
  grid: [["random_state", ""]],
  tpe: [["n_EI_candidates", "24"], ["random_state", ""], ["gamma", ""], ["prior_weight", "1.0"]],
  "multivariate-tpe": [["n_ei_candidates", "24"], ["random_state", ""],
                       ["n_startup_trials", "10"]],
  cmaes: [["random_state", ""], ["sigma", ""],
          ["restart_strategy", "none", ["none", "ipop", "bipop"]]],
  sobol: [],
  bayesianoptimization: [["base_estimator", "GP", ["GP"]], ["n_initial_points", "10"],
                         ["acq_func", "gp_hedge", ["gp_hedge", "LCB", "EI", "PI"]],
                         ["acq_optimizer", "auto", ["auto", "sampling", "lbfgs"]],
                         ["random_state", ""]],
  hyperband: [["resource_name", ""], ["eta", "3"], ["r_l", ""]],
  pbt: [["suggestion_trial_dir", "/var/log/katib/checkpoints/"], ["n_population", "40"],
        ["truncation_threshold", "0.2"], ["resample_probability", ""]],
  darts: [["num_epochs", "50"], ["w_lr", "0.025"], ["w_lr_min", "0.001"],
          ["w_momentum", "0.9"], ["w_weight_decay", "0.0003"], ["w_grad_clip", "5.0"],
          ["alpha_lr", "0.0003"], ["alpha_weight_decay", "0.001"], ["batch_size", "128"],
          ["num_workers", "4"], ["init_channels", "16"], ["print_step", "50"],
          ["num_nodes", "4"], ["stem_multiplier", "3"]],
  enas: [["controller_hidden_size", "64"], ["controller_temperature", "5.0"],
         ["controller_tanh_const", "2.25"], ["controller_entropy_weight", "1e-05"],
         ["controller_baseline_decay", "0.999"], ["controller_learning_rate", "5e-05"],
         ["controller_skip_target", "0.4"], ["controller_skip_weight", "0.8"],
         ["controller_train_steps", "50"], ["controller_log_every_steps", "10"]],
};
export const NAS_ALGORITHMS = new Set(["darts", "enas"]);
export const EARLY_STOPPING = {none: [], medianstop: [["min_trials_required", "3"],
                                                       ["start_step", "4"]]};
export const COLLECTORS = ["StdOut", "File", "TensorFlowEvent", "Push", "None"];
export const PARAMETER_TYPES = ["double", "int", "categorical", "discrete"];
export const RESUME_POLICIES = ["Never", "LongRunning", "FromVolume"];
export const DEFAULT_PARAMETERS = [
  {name: "lr", type: "double", min: "0.01", max: "0.05", step: "", list: ""},
  {name: "num-layers", type: "int", min: "2", max: "5", step: "", list: ""},
];

// A parameter "num-layers" is the trial parameter "num_layers" (as Katib's examples do).
export const trialParameterName = (param) => param.replaceAll("-", "_");

// The default trial: python prints its arguments and a metric that is a deterministic
// function of them, in the StdOut collector's "name=value" format.
export function defaultCommand(metric, parameters) {
  const code = "import random, sys; print('arguments:', *sys.argv[1:]); " +
    `print('${metric || "accuracy"}=%.4f' % random.Random(' '.join(sys.argv[1:])).random())`;
  return ["python3", "-c", code,
          ...parameters.filter((p) => p.name).map(
            (p) => `\${trialParameters.${trialParameterName(p.name)}}`)];
}

const numberOr = (raw) => {
  const text = String(raw).trim();
  return text !== "" && Number.isFinite(Number(text)) ? Number(text) : text;
};
const words = (raw) => raw.split(",").map((w) => w.trim()).filter(Boolean);

function settings(list) {
  return list.filter((s) => s.value.trim() !== "")
    .map((s) => ({name: s.name, value: s.value.trim()}));
}

function feasibleSpace(p) {
  if (p.type === "categorical" || p.type === "discrete") return {list: words(p.list)};
  const space = {min: p.min.trim(), max: p.max.trim()};
  if (p.step.trim()) space.step = p.step.trim();
  return space;
}

// The Experiment the form describes. `v` holds plain strings (and lists of them).
export function buildExperiment(v, namespace) {
  const objective = {type: v.objectiveType, objectiveMetricName: v.metric.trim()};
  if (v.goal.trim()) objective.goal = numberOr(v.goal);
  const additional = words(v.additionalMetrics);
  if (additional.length) objective.additionalMetricNames = additional;
  const algorithm = {algorithmName: v.algorithm};
  const algorithmSettings = settings(v.algorithmSettings);
  if (algorithmSettings.length) algorithm.algorithmSettings = algorithmSettings;
  const spec = {
    objective,
    algorithm,
    parallelTrialCount: numberOr(v.parallel),
    maxTrialCount: numberOr(v.maxTrials),
    maxFailedTrialCount: numberOr(v.maxFailed),
    resumePolicy: v.resumePolicy,
    metricsCollectorSpec: {collector: {kind: v.collector}},
    parameters: v.parameters.map((p) => ({name: p.name.trim(), parameterType: p.type,
                                         feasibleSpace: feasibleSpace(p)})),
    trialTemplate: {
      primaryContainerName: "training-container",
      trialParameters: v.parameters.filter((p) => p.name.trim()).map((p) => ({
        name: trialParameterName(p.name.trim()), reference: p.name.trim(),
        description: `the ${p.name.trim()} parameter`})),
      trialSpec: {apiVersion: "batch/v1", kind: "Job", spec: {template: {spec: {
        restartPolicy: "Never",
        containers: [{name: "training-container", image: v.image.trim(),
                      command: v.command.split("\n").filter((line) => line !== "")}],
      }}}},
    },
  };
  if (v.earlyStopping !== "none") {
    spec.earlyStopping = {algorithmName: v.earlyStopping};
    const es = settings(v.earlyStoppingSettings);
    if (es.length) spec.earlyStopping.algorithmSettings = es;
  }
  return {apiVersion: "kubeflow.org/v1beta1", kind: "Experiment",
          metadata: {name: v.name.trim(), namespace}, spec};
}

// ------------------------------------------------------------------------------ YAML out

const PLAIN = /^[A-Za-z_/][\w./-]*$/;
const RESERVED = /^(true|false|yes|no|on|off|null|y|n|~)$/i;

function scalar(value) {
  if (value === null || value === undefined) return "null";
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  const text = String(value);
  return PLAIN.test(text) && !RESERVED.test(text) ? text : JSON.stringify(text);
}

const isEmpty = (v) => (Array.isArray(v) ? v.length === 0
  : v && typeof v === "object" && Object.keys(v).length === 0);

function lines(value, indent) {
  const pad = " ".repeat(indent);
  if (Array.isArray(value)) {
    return value.flatMap((item) => {
      if (item && typeof item === "object" && !isEmpty(item)) {
        const inner = lines(item, indent + 2);
        return [`${pad}- ${inner[0].trimStart()}`, ...inner.slice(1)];
      }
      return [`${pad}- ${isEmpty(item) ? JSON.stringify(item) : scalar(item)}`];
    });
  }
  return Object.entries(value).flatMap(([key, v]) => {
    if (v && typeof v === "object" && !isEmpty(v)) {
      return [`${pad}${scalar(key)}:`, ...lines(v, Array.isArray(v) ? indent : indent + 2)];
    }
    return [`${pad}${scalar(key)}: ${isEmpty(v) ? JSON.stringify(v) : scalar(v)}`];
  });
}

// Block-style YAML of a JSON value; strings that need it are JSON-quoted (valid YAML).
export function toYaml(value) {
  return `${lines(value, 0).join("\n")}\n`;
}
