"""Two-tower retrieval model, built from the feature specification.

* `Tower`: `features.FeatureEncoder` over the features of one model
  (`features.features_for(QUERY)` or `(CANDIDATE)`) followed by dense
  layers: dict of raw inputs -> embedding [B, D] (L2-normalized when
  `normalize`). Adding a `Feature` line to the spec adds it to the tower.
* `RetrievalModel`: `tfrs.models.Model` with two training objectives
  (`RetrievalConfig.negatives`):
  - `corpus` (default): `CorpusSoftmax`, a softmax over every movie of
    the corpus. The sampled softmax exists because corpora are large; at
    3,883 movies the exact one costs one [B, N] matmul and the candidate
    tower over N movies per step, and retrieves better (no sampling bias
    to correct).
  - `in_batch`: `tfrs.tasks.Retrieval` (in-batch softmax) with
    temperature, logQ correction of the in-batch sampling bias
    (`candidate_sampling_probability` from the candidates' train
    frequencies), removal of accidental hits, hard-negative mining, and
    mixed negative sampling (`corpus_negatives` movies drawn uniformly
    from the corpus each step as extra negatives; Yang et al., "Mixed
    Negative Sampling", WWW 2020). This is what scales to big corpora.
* What a training example is (`RetrievalConfig.examples`):
  - `user` (default): a user. Each step holds out a random
    `history_dropout` share of each user's train movies: the rest is the
    query tower's history input, and every held-out movie is a positive of
    the corpus softmax (`CorpusSoftmax` with ragged positions; the
    multinomial likelihood of Mult-DAE, Liang et al., WWW 2018). The
    query tower and the [B, N] scores run once per user instead of once
    per rating (~130 times fewer rows per pass on MovieLens 1M), so many
    more passes fit in the same time (`passes_per_epoch`).
  - `rating`: a train rating; its own movie is left out of the history,
    each other history id is dropped with probability `history_dropout`,
    and the rating's movie is the positive. Needed for `in_batch`.
  Either way the tower learns to complete a partial history, which is
  what serving asks of it.
* `Ensemble`: `RetrievalConfig.members` independently initialized tower
  pairs trained side by side on the same batches, each with its own loss
  (a deep ensemble). `query_model` / `candidate_model` concatenate the
  members' embeddings, [B, members * D], so a dot product of the two is
  the sum of the members' scores and one index serves the ensemble.

```python
model = RetrievalModel(config, data.vocabularies, movie_frequencies)
model.compile(tf.keras.optimizers.Adam(config.learning_rate))
examples = model.user_examples(data.users)  # or training_examples(data.train)
model.fit(data.batches(examples.repeat(config.passes_per_epoch),
                       config.batch_size, seed), epochs=config.epochs)
model.query_model(inputs)      # [B, D]
model.candidate_model(inputs)  # [B, D]
```
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_pipeline import errors, features, optim


@dataclasses.dataclass
class RetrievalConfig:
  """Hyperparameters of the retrieval stage (flags of `train retrieval`).

  The defaults are tuned on the real data (random split); see README.
  """
  model: str = "two_tower"
  """`two_tower` (the retrieval task alone) or `joint` (`retrieval.joint`:
  the retrieval task and a rating task (MSE) over the same towers, as in
  TFRS's multitask tutorial; needs --examples rating: the rating task
  learns the rating of each example's movie)."""
  retrieval_weight: float = 1.0
  """joint: weight of the retrieval loss (softmax loss per example)."""
  rating_weight: float = 1.0
  """joint: weight of the rating loss (mean squared error)."""
  examples: str = "user"
  """What one training example is: `user` (part of a user's history
  predicts the rest) or `rating` (one rating, as in the TFRS tutorial)."""
  embedding_dim: int = 128
  """Output size D of each member's towers."""
  # 2 keeps `make train` under 10 minutes.
  members: int = 2
  """Tower pairs of the ensemble (the served embedding has members * D
  dimensions)."""
  hidden_units: Tuple[int, ...] = (256,)
  """Sizes of the dense ReLU layers before each tower's output,
  comma-separated (empty: none)."""
  normalize: bool = True
  """L2-normalize both towers' outputs."""
  temperature: float = 0.1
  """Softmax temperature; 0: none."""
  negatives: str = "corpus"
  """Negatives of the softmax: `corpus` (every movie, a full softmax) or
  `in_batch` (the batch's other movies; needs --examples rating)."""
  # The rest of the negatives options apply to `in_batch` only.
  logq_correction: bool = True
  """in_batch: subtract the log train frequency of each candidate."""
  remove_accidental_hits: bool = True
  """in_batch: ignore a negative that is the example's own movie."""
  num_hard_negatives: int = 0
  """in_batch: > 0 keeps only this many hardest negatives (< batch_size);
  0: all."""
  corpus_negatives: int = 0
  """in_batch: > 0 adds this many uniformly drawn movies as negatives."""
  embedding_l2: float = 0.0
  """L2 regularization of the embedding tables; 0: none."""
  dropout: float = 0.3
  """Dropout rate after each hidden layer, in [0, 1)."""
  history_length: int = 2000
  """Most recent movie ids of a user's history the query tower reads."""
  history_dropout: float = 0.5
  """Share of a history held out as targets (examples=user, in (0, 1))
  or dropped (examples=rating, in [0, 1))."""
  batch_size: int = 256
  """Examples (users or ratings) per training step."""
  epochs: int = 10
  """Training epochs (a stopped run resumes from its last epoch)."""
  passes_per_epoch: int = 10
  """examples=user: passes over the users per epoch."""
  learning_rate: float = 0.003
  """Adam learning rate."""
  lr_schedule: str = "cosine"
  """`cosine` decays the learning rate to 0 over all epochs; `constant`
  keeps it."""
  eval_sample: int = 5000
  """Test ratings sampled for the per-epoch top-k metrics."""
  top_k: int = 500
  """K of the exported ScaNN index: a request gets at most K candidates."""
  seed: int = 42
  """Seed of initialization, shuffling and sampling."""

  @property
  def output_dim(self) -> int:
    """Dimension of the served embeddings (all members concatenated)."""
    return self.embedding_dim * self.members

  def __post_init__(self):
    """Raises `errors.ConfigError` for settings that cannot work."""
    def check(ok, message):
      if not ok:
        raise errors.ConfigError(message)
    check(min(self.epochs, self.batch_size, self.embedding_dim,
              self.members, self.passes_per_epoch) >= 1,
          "epochs, batch_size, embedding_dim, members and passes_per_epoch "
          "must be >= 1")
    check(self.num_hard_negatives >= 0 and self.history_length >= 0,
          "num_hard_negatives and history_length must be >= 0")
    check(not self.num_hard_negatives
          or self.num_hard_negatives < self.batch_size,
          "num_hard_negatives must be < batch_size")
    check(self.model in MODELS,
          f"--model must be one of {', '.join(MODELS)}")
    check(self.model != "joint" or self.examples == "rating",
          "--model joint needs --examples rating (its rating task learns "
          "the rating of each example's movie; user examples carry none)")
    check(min(self.retrieval_weight, self.rating_weight) >= 0
          and self.retrieval_weight + self.rating_weight > 0,
          "retrieval_weight and rating_weight must be >= 0, not both 0")
    check(self.examples in EXAMPLES,
          f"--examples must be one of {', '.join(EXAMPLES)}")
    check(self.negatives in NEGATIVES,
          f"--negatives must be one of {', '.join(NEGATIVES)}")
    check(self.examples != "user" or self.negatives == "corpus",
          "--examples user needs negatives='corpus' (use --examples rating "
          "for in_batch)")
    check(self.examples != "user" or 0.0 < self.history_dropout < 1.0,
          "--examples user needs --history_dropout: must be in (0, 1) (the share of "
          "each history held out as targets)")
    check(0.0 <= self.history_dropout < 1.0,
          "history_dropout must be in [0, 1)")
    check(self.lr_schedule in optim.LR_SCHEDULES,
          f"--lr_schedule must be one of {', '.join(optim.LR_SCHEDULES)}")
    check(not self.temperature or self.temperature >= 0,
          "temperature must be >= 0 (0: none)")


EXAMPLES = ("user", "rating")
MODELS = ("two_tower", "joint")
HISTORY = "user_history"  # the input listing a user's train movies


class Tower(tf.keras.Model):
  """Raw inputs -> embedding [B, D] through the spec's features of a model.

  Args:
    feature_list: the features to encode (`features.features_for(...)`).
    vocabularies: train vocabularies.
    embedding_dim: D.
    hidden_units: sizes of the ReLU layers between encoder and output.
    normalize: L2-normalize the output.
    embeddings_regularizer: applied to every embedding table.
    dropout: rate after each hidden layer (training only).
    token_dropout: feature name -> share of its ids dropped in training
      (`multi_categorical` features).
  """

  def __init__(self, feature_list: Sequence[features.Feature],
               vocabularies: features.Vocabularies, embedding_dim: int,
               hidden_units: Sequence[int] = (), normalize: bool = True,
               embeddings_regularizer=None, dropout: float = 0.0,
               token_dropout: Optional[Mapping[str, float]] = None,
               **kwargs):
    super().__init__(**kwargs)
    self.encoder = features.FeatureEncoder(
        feature_list, vocabularies, embeddings_regularizer, token_dropout,
        name="encoder")
    self.dense_layers = []
    for i, units in enumerate(hidden_units):
      self.dense_layers.append(tf.keras.layers.Dense(
          units, activation="relu", name=f"hidden_{i}"))
      if dropout:
        self.dense_layers.append(tf.keras.layers.Dropout(dropout))
    self.output_layer = tf.keras.layers.Dense(embedding_dim, name="output")
    self.normalize = normalize
    self.embedding_dim = embedding_dim

  def call(self, inputs: Mapping[str, tf.Tensor], training=False
           ) -> tf.Tensor:
    """Dict of raw inputs [B] -> embeddings [B, D]."""
    x = self.encoder(inputs, training=training)
    for layer in self.dense_layers:
      x = layer(x, training=training)
    x = self.output_layer(x)
    if self.normalize:
      x = tf.math.l2_normalize(x, axis=-1)
    return x


class Ensemble(tf.keras.Model):
  """Member towers side by side: raw inputs -> [B, sum of member D].

  The dot product of two ensembles' outputs is the sum of the member
  pairs' dot products (members are L2-normalized: the mean cosine times
  the number of members).

  Args:
    members: towers over the same features (`Tower`).
  """

  def __init__(self, members: Sequence[Tower], **kwargs):
    super().__init__(**kwargs)
    self.members = list(members)
    self.embedding_dim = sum(m.embedding_dim for m in self.members)

  @property
  def encoder(self) -> features.FeatureEncoder:
    """The first member's encoder (all read the same features and ids)."""
    return self.members[0].encoder

  def call(self, inputs: Mapping[str, tf.Tensor], training=False
           ) -> tf.Tensor:
    """Dict of raw inputs [B] -> concatenated embeddings [B, sum D].
    Bag-of-ids features (user histories) are split and looked up once,
    not once per member."""
    inputs = self.encoder.add_ids(inputs)
    return tf.concat([m(inputs, training=training) for m in self.members],
                     axis=-1)


class SamplingProbability(tf.keras.layers.Layer):
  """movie ids [B] -> train frequency [B] (share of train ratings).

  Unknown ids get the smallest known frequency. Used for the logQ
  correction of the in-batch softmax.
  """

  def __init__(self, frequencies: Mapping[str, float], **kwargs):
    super().__init__(**kwargs)
    keys = list(frequencies) or [""]
    values = np.array([frequencies[k] for k in keys] if frequencies
                      else [1.0], np.float32)
    self._table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys, tf.string), tf.constant(values)),
        default_value=float(values.min()))

  def call(self, ids: tf.Tensor) -> tf.Tensor:
    return self._table.lookup(ids)


class CorpusSoftmax(tf.keras.layers.Layer):
  """Retrieval loss with a softmax over the whole candidate corpus.

  The exact objective that `tfrs.tasks.Retrieval` approximates with
  in-batch negatives; affordable when the corpus embeddings [N, D] can be
  computed every step. Summed over the batch, as `tfrs.tasks.Retrieval`.

  Args:
    temperature: scores are divided by it (None: not).
  """

  def __init__(self, temperature: Optional[float] = None, **kwargs):
    super().__init__(**kwargs)
    self.temperature = temperature
    self._loss = tf.keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=tf.keras.losses.Reduction.SUM)

  def call(self, query_embeddings: tf.Tensor, corpus_embeddings: tf.Tensor,
           positions: tf.Tensor) -> tf.Tensor:
    """query [B, D], corpus [N, D], positions [B] (row of each query's
    positive in the corpus) or ragged [B, None] (each query's positives,
    one softmax term each); < 0: not in the corpus, ignored -> loss []."""
    scores = tf.matmul(query_embeddings, corpus_embeddings, transpose_b=True)
    if self.temperature:
      scores = scores / self.temperature
    if isinstance(positions, tf.RaggedTensor):
      rows = positions.value_rowids()
      columns = positions.flat_values
      log_probabilities = tf.gather_nd(
          tf.nn.log_softmax(scores),
          tf.stack([rows, tf.maximum(columns, 0)], axis=1))
      return -tf.reduce_sum(log_probabilities
                            * tf.cast(columns >= 0, scores.dtype))
    known = positions >= 0
    return self._loss(tf.maximum(positions, 0), scores,
                      sample_weight=tf.cast(known, scores.dtype))


class RetrievalModel(tfrs.models.Model):
  """Query tower, candidate tower and the in-batch softmax retrieval task.

  Args:
    config: hyperparameters.
    vocabularies: train vocabularies.
    candidate_frequencies: movie id -> share of train ratings (needed for
      `config.logq_correction`).
    corpus: the movies table (`pipeline.Data.table("movies")`), needed for
      `negatives="corpus"` and for `config.corpus_negatives`.
  """

  def __init__(self, config: RetrievalConfig,
               vocabularies: features.Vocabularies,
               candidate_frequencies: Optional[Mapping[str, float]] = None,
               corpus: Optional[Mapping[str, np.ndarray]] = None):
    super().__init__()
    self.config = config
    regularizer = (tf.keras.regularizers.l2(config.embedding_l2)
                   if config.embedding_l2 else None)
    tower = dict(vocabularies=vocabularies,
                 embedding_dim=config.embedding_dim,
                 hidden_units=config.hidden_units,
                 normalize=config.normalize,
                 embeddings_regularizer=regularizer,
                 dropout=config.dropout)
    if config.negatives not in NEGATIVES:
      raise ValueError(f"negatives must be one of {NEGATIVES}, not "
                       f"{config.negatives!r}")
    if config.examples not in EXAMPLES:
      raise ValueError(f"examples must be one of {EXAMPLES}, not "
                       f"{config.examples!r}")
    query_features = features.features_for(features.QUERY)
    history = [f.name for f in query_features
               if f.source == HISTORY and f.kind == "multi_categorical"]
    if config.examples == "user" and (config.negatives != "corpus"
                                      or len(history) != 1):
      raise ValueError(
          "examples='user' needs negatives='corpus' and one "
          f"multi_categorical query feature over {HISTORY!r} (has "
          f"negatives={config.negatives!r}, features {history})")
    if config.examples == "user" and not 0.0 < config.history_dropout < 1.0:
      raise ValueError("examples='user' holds out history_dropout of each "
                       "history as targets: it must be in (0, 1), not "
                       f"{config.history_dropout}")
    token_dropout = {}
    if config.history_dropout and history and config.examples == "rating":
      token_dropout[history[0]] = config.history_dropout
    if config.members < 1:
      raise ValueError(f"members must be >= 1, not {config.members}")
    single = config.members == 1
    self.query_towers = [
        Tower(query_features, token_dropout=token_dropout,
              name="query_tower" if single else f"query_tower_{i}", **tower)
        for i in range(config.members)]
    self.candidate_towers = [
        Tower(features.features_for(features.CANDIDATE),
              name="candidate_tower" if single else f"candidate_tower_{i}",
              **tower)
        for i in range(config.members)]
    self._history_ids_key = next(
        (e.ids_key for e in self.query_towers[0].encoder.embeddings
         if history and e.feature.name == history[0]), None)
    self.query_model = (self.query_towers[0] if single else
                        Ensemble(self.query_towers, name="query_ensemble"))
    self.candidate_model = (
        self.candidate_towers[0] if single else
        Ensemble(self.candidate_towers, name="candidate_ensemble"))
    self.sampling_probability = None
    if config.logq_correction:
      if not candidate_frequencies:
        raise ValueError("logq_correction needs candidate_frequencies")
      self.sampling_probability = SamplingProbability(candidate_frequencies)
    self._corpus = None
    full_softmax = config.negatives == "corpus"
    if config.corpus_negatives or full_softmax:
      if corpus is None:
        raise ValueError(f"negatives={config.negatives!r} / "
                         "corpus_negatives need the corpus")
      self._corpus = {}
      for spec in features.inputs_for(features.CANDIDATE):
        value = np.asarray(corpus[spec.name])
        self._corpus[spec.name] = tf.constant(
            value.astype(str) if spec.dtype == tf.string else value,
            spec.dtype)
      self._corpus_size = len(corpus["movie_id"])
    self.corpus_task = None
    if full_softmax:
      ids = np.asarray(corpus["movie_id"]).astype(str)
      self._corpus_position = tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(
              tf.constant(ids), tf.range(len(ids), dtype=tf.int64)),
          default_value=-1)
      self.corpus_task = CorpusSoftmax(config.temperature or None)
    self.task = tfrs.tasks.Retrieval(
        temperature=config.temperature or None,
        num_hard_negatives=config.num_hard_negatives or None,
        remove_accidental_hits=config.remove_accidental_hits)
    # The loss that `tfrs.models.Model.train_step` reports is the last
    # batch's sum (epoch logs: a short last batch looks like a drop); this
    # is the softmax loss per example, averaged over the epoch.
    self.loss_per_example = tf.keras.metrics.Mean(name="loss_per_example")

  def training_examples(self, ds: tf.data.Dataset) -> tf.data.Dataset:
    """Unbatched train examples with the query tower's bag-of-ids
    features looked up once (`FeatureEncoder.with_ids`; cache the result),
    their raw strings dropped when the candidate tower does not read
    them."""
    encoder = self.query_model.encoder
    bags = {f.source for f in encoder.features
            if f.kind == "multi_categorical"}
    shared = bags & {f.source for f in self.candidate_model.encoder.features}
    return encoder.with_ids(ds, drop_sources=not shared)

  def user_examples(self, users: tf.data.Dataset) -> tf.data.Dataset:
    """`examples="user"` train examples from the users table (unbatched):
    each user's query inputs, the ids of their train movies (the history
    feature's `ids_key`) and those movies' rows in the corpus
    (`history_positions`, int64 ragged, aligned with the ids). Users
    without train movies are left out. Cache the result."""
    encoder = self.query_model.encoder

    def add(batch):
      batch = encoder.add_ids(batch)
      batch["history_positions"] = self._corpus_position.lookup(
          tf.strings.split(batch.pop(HISTORY), features.GENRE_SEPARATOR))
      return batch

    return (users.batch(4096).map(add).unbatch()
            .filter(lambda x: tf.reduce_any(x["history_positions"] >= 0)))

  def compute_loss(self, inputs: Dict[str, tf.Tensor], training=False
                   ) -> tf.Tensor:
    """Softmax loss of a batch of train examples (users or ratings),
    summed over the positives and the members."""
    member_loss = (self._held_out_loss if self.config.examples == "user"
                   else self._rating_loss)
    losses, positives = zip(*[
        member_loss(query_tower, candidate_tower, inputs, training)
        for query_tower, candidate_tower in zip(self.query_towers,
                                                self.candidate_towers)])
    loss = tf.add_n(list(losses))
    size = tf.add_n(list(positives)) / len(positives)  # per member
    self.loss_per_example.update_state(loss / tf.maximum(size, 1.0),
                                       sample_weight=size)
    return loss

  def _held_out_loss(self, query_tower: Tower, candidate_tower: Tower,
                     inputs: Dict[str, tf.Tensor], training: bool
                     ) -> Tuple[tf.Tensor, tf.Tensor]:
    """One member's loss on user examples: a random `history_dropout`
    share of each history held out (a new draw per member and step; none
    outside training) -> (loss [], number of held-out positives [])."""
    ids = inputs[self._history_ids_key]
    positions = inputs["history_positions"]
    held_out = tf.zeros_like(ids.flat_values, tf.bool)
    if training:
      held_out = (tf.random.uniform(tf.shape(ids.flat_values))
                  < self.config.history_dropout)
    kept = dict(inputs)
    kept[self._history_ids_key] = tf.ragged.boolean_mask(
        ids, ids.with_flat_values(~held_out))
    targets = tf.ragged.boolean_mask(
        positions, positions.with_flat_values(held_out))
    query = query_tower(kept, training=training)
    corpus = candidate_tower(self._corpus, training=training)
    positives = tf.reduce_sum(tf.cast(targets.flat_values >= 0, tf.float32))
    return self.corpus_task(query, corpus, targets), positives

  def _rating_loss(self, query_tower: Tower, candidate_tower: Tower,
                   inputs: Dict[str, tf.Tensor], training: bool
                   ) -> Tuple[tf.Tensor, tf.Tensor]:
    """One member's loss on rating examples -> (loss [], examples [])."""
    size = tf.cast(tf.shape(inputs["movie_id"])[0], tf.float32)
    return self._member_loss(query_tower, candidate_tower, inputs,
                             training), size

  def _member_loss(self, query_tower: Tower, candidate_tower: Tower,
                   inputs: Dict[str, tf.Tensor], training: bool
                   ) -> tf.Tensor:
    query = query_tower(inputs, training=training)
    candidate = (None if self.corpus_task is not None
                 else candidate_tower(inputs, training=training))
    return self.softmax_loss(query, candidate, candidate_tower, inputs,
                             training)

  def softmax_loss(self, query: tf.Tensor, candidate: Optional[tf.Tensor],
                   candidate_tower: Tower, inputs: Dict[str, tf.Tensor],
                   training: bool) -> tf.Tensor:
    """One member's softmax loss of rating examples [] (summed) from the
    query embeddings [B, D] and, for `in_batch`, the candidate embeddings
    of the examples' movies [B, D] (`corpus` embeds the corpus instead)."""
    movie_ids = inputs["movie_id"]
    if self.corpus_task is not None:
      corpus = candidate_tower(self._corpus, training=training)
      return self.corpus_task(query, corpus,
                              self._corpus_position.lookup(movie_ids))
    # q: expected occurrences of each candidate among a step's negatives.
    num_batch = tf.cast(tf.shape(movie_ids)[0], tf.float32)
    uniform = 0.0
    if self._corpus is not None and training:
      extra = self._sample_corpus()
      uniform = (float(self.config.corpus_negatives)
                 / float(self._corpus_size))
      candidate = tf.concat(
          [candidate, candidate_tower(extra, training=training)], 0)
      movie_ids = tf.concat([movie_ids, extra["movie_id"]], 0)
    probability = None
    if self.sampling_probability is not None:
      probability = (num_batch * self.sampling_probability(movie_ids)
                     + uniform)
    ids = None
    if self.config.remove_accidental_hits:
      # Integer ids compare much faster than strings in the [B, B] check.
      ids = tf.strings.to_hash_bucket_fast(movie_ids, 1 << 62)
    return self.task(
        query, candidate, candidate_sampling_probability=probability,
        candidate_ids=ids, compute_metrics=False)

  def _sample_corpus(self) -> Dict[str, tf.Tensor]:
    """`corpus_negatives` movies drawn uniformly (with replacement)."""
    index = tf.random.uniform([self.config.corpus_negatives], 0,
                              self._corpus_size, dtype=tf.int32)
    return {k: tf.gather(v, index) for k, v in self._corpus.items()}


NEGATIVES = ("corpus", "in_batch")


def candidate_frequencies(movie_ids: np.ndarray) -> Dict[str, float]:
  """movie id -> its share of the given train ratings' movie ids."""
  ids, counts = np.unique(np.asarray(movie_ids).astype(str),
                          return_counts=True)
  total = max(int(counts.sum()), 1)
  return {i: float(c) / total for i, c in zip(ids, counts)}


_EMBED_FNS = weakref.WeakKeyDictionary()


def embed(tower: tf.keras.Model, columns: Mapping[str, np.ndarray],
          batch_size: int = 4096) -> np.ndarray:
  """Embeds a table of raw-input columns [N] in batches -> [N, D]."""
  names = [i.name for i in features.INPUTS if i.name in columns]
  n = len(columns[names[0]])

  # One traced function per tower, reused across calls (per-epoch eval);
  # kept outside the model so it is not tracked into exports.
  run = _EMBED_FNS.get(tower)
  if run is None:
    run = _EMBED_FNS[tower] = tf.function(tower.__call__,
                                          reduce_retracing=True)

  out = []
  for start in range(0, n, batch_size):
    batch = {}
    for name in names:
      dtype = features.INPUT_BY_NAME[name].dtype
      value = np.asarray(columns[name][start:start + batch_size])
      batch[name] = tf.constant(value.astype(str) if dtype == tf.string
                                else value, dtype)
    out.append(run(batch).numpy())
  if not out:
    return np.zeros((0, tower.embedding_dim), np.float32)
  return np.concatenate(out).astype(np.float32)
