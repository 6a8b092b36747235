# Homebrew formula for localllm, installed from a wheel or sdist built by `python -m build`.
# Point `url` at the release's sdist and fill in its sha256 (`shasum -a 256 dist/localllm-*.tar.gz`).
class Localllm < Formula
  include Language::Python::Virtualenv

  desc "Run large language models on your own machine, in the terminal"
  homepage "https://github.com/localllm/localllm"
  url "https://files.pythonhosted.org/packages/source/l/localllm/localllm-0.1.0.tar.gz"
  sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  license "MIT"

  depends_on "cmake" => :build # llama-cpp-python builds llama.cpp (Metal on Apple Silicon)
  depends_on "python@3.12"

  def install
    venv = virtualenv_create(libexec, "python3.12")
    system libexec/"bin/pip", "install", "--no-cache-dir", "#{buildpath}[starter]"
    bin.install_symlink libexec/"bin/localllm"
    generate_completions_from_executable(bin/"localllm", "completions", shells: [:bash, :zsh, :fish])
  end

  test do
    assert_match "localllm", shell_output("#{bin}/localllm --version")
  end
end
