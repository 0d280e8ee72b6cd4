from openblip.cli import main

main()
