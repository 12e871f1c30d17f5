# Follows "Word Embeddings: Encoding Lexical Semantics" (the N-gram language model):
# https://pytorch.org/tutorials/beginner/nlp/word_embeddings_tutorial.html
# A vocabulary from a short text, an nn.Embedding looked up by word indices, a linear layer,
# log_softmax and NLLLoss, trained with SGD; the embeddings start from linspace, not the random
# stream, so the losses compare.
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

CONTEXT_SIZE = 2
EMBEDDING_DIM = 4
text = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "and", "the", "quick", "dog", "sleeps"]
ngrams = [([text[i - j - 1] for j in range(CONTEXT_SIZE)], text[i]) for i in range(CONTEXT_SIZE, len(text))]
vocab = sorted(set(text))
word_to_ix = {word: i for i, word in enumerate(vocab)}
print(len(vocab), ngrams[:2])


class NGramLanguageModeler(nn.Module):
    def __init__(self, vocab_size, embedding_dim, context_size):
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, embedding_dim)
        self.linear1 = nn.Linear(context_size * embedding_dim, 16)
        self.linear2 = nn.Linear(16, vocab_size)

    def forward(self, inputs):
        embeds = self.embeddings(inputs).view((1, -1))
        out = F.relu(self.linear1(embeds))
        return F.log_softmax(self.linear2(out), dim=1)


model = NGramLanguageModeler(len(vocab), EMBEDDING_DIM, CONTEXT_SIZE)
print(model)
with torch.no_grad():
    for i, p in enumerate(model.parameters()):
        p.copy_(torch.cos(torch.arange(p.numel(), dtype=torch.float32) * (0.7 + i)).reshape(p.shape) * 0.4)

loss_function = nn.NLLLoss()
optimizer = optim.SGD(model.parameters(), lr=0.1)
losses = []
for _epoch in range(5):
    total_loss = 0
    for context, target in ngrams:
        context_idxs = torch.tensor([word_to_ix[w] for w in context], dtype=torch.long)
        model.zero_grad()
        log_probs = model(context_idxs)
        loss = loss_function(log_probs, torch.tensor([word_to_ix[target]], dtype=torch.long))
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
    losses.append(round(total_loss, 4))
print(losses)
print(loss.grad_fn, model.embeddings(torch.tensor([1])).grad_fn)
print(model.embeddings.weight[word_to_ix["fox"]])

padded = nn.Embedding(5, 2, padding_idx=0)
print(padded, padded.weight[0])
looked_up = padded(torch.tensor([[0, 2, 0], [4, 3, 2]]))
looked_up.sum().backward()
print(tuple(looked_up.shape), padded.weight.grad)
